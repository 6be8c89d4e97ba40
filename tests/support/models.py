"""Small models with random weights, built one way: engine.params.init_params from one seed."""
import numpy as np

from charrnn.engine.model import Model
from charrnn.engine.params import Params, Shape, init_params


def random_model(cell: str = "lstm", vocab_size: int = 7, hidden: int = 4, layers: int = 2, embedding: int = 0,
                 seed: int = 0, scale: float = 0.5) -> Model:
    """A float32 model of that shape whose every parameter is U(-scale, scale) from default_rng(seed)."""
    shape = Shape(cell, vocab_size, hidden, layers, embedding)
    params = Params(shape)
    init_params(params, np.random.default_rng(seed), scale=scale)
    return Model(shape, params)
