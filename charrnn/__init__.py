"""charrnn: character-level RNN language models (LSTM, GRU, RNN) trained fast on the CPU with Numba."""

__version__ = "0.1.0"
