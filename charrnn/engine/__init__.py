"""The numerical engine: one flat float32 parameter buffer, the model, optimizers, weight averaging,
the thread pool, and the private Numba kernels under kernels/."""
