"""Central finite differences of Model.forward_backward in float64.

Every parameter element of the Numba model is perturbed by +-EPS and the analytic gradient written by
forward_backward is compared with (loss(+) - loss(-)) / (2 EPS), for every cell, one-hot and embedded
input, 1-3 layers, a non-zero carried-in state and fixed dropout masks (and without dropout: a
different code path). Sizes are tiny so this also runs in seconds with NUMBA_DISABLE_JIT=1.

The returned state and the loss are also compared with the pure-NumPy reference (tests/reference.py).
"""
import numpy as np
import pytest

from charrnn.engine.model import Model, State
from charrnn.engine.params import Shape

try:  # tests/ is on sys.path under pytest's default (prepend) import mode
    import reference as ref
except ImportError:  # pragma: no cover
    from tests import reference as ref

CELLS = ["lstm", "gru", "rnn"]
EPS = 1e-6
ATOL = 1e-8
RTOL = 1e-6

V, H, B, T = 5, 3, 2, 4
E_SIZE = 4
DROPOUT = 0.25

CASES = [
    pytest.param(cell, E, L, p, id=f"{cell}-{'embed' if E else 'onehot'}-L{L}-{'drop' if p else 'nodrop'}")
    for cell in CELLS
    for E in (0, E_SIZE)
    for L in (1, 2, 3)
    for p in (DROPOUT, 0.0)
]


def _setup(cell, E, L, p):
    seed = 1000 * CELLS.index(cell) + 100 * E + 10 * L + int(p * 100)
    rng = np.random.default_rng(seed)
    m = Model(Shape(cell, V, H, L, E), dtype=np.float64)
    # every weight and bias random (no special forget-gate bias): all of them must matter
    m.params.flat[:] = rng.uniform(-0.5, 0.5, size=len(m.params))
    x = rng.integers(0, V, size=(B, T))
    y = rng.integers(0, V, size=(B, T))
    h0 = rng.uniform(-0.8, 0.8, size=(L, B, H))
    c0 = rng.uniform(-0.8, 0.8, size=(L, B, H)) if cell == "lstm" else None
    # seed + 2: with only B*T*H = 24 units a layer, seed + 1 gave one case a mask that kept every unit
    # (a 0.1 % event); the test below needs masks that both drop and keep
    masks = m.dropout_masks(np.random.default_rng(seed + 2), p, B, T)
    return m, x, y, h0, c0, masks


def _state(h0, c0):
    return State(h0.copy(), None if c0 is None else c0.copy())


def _param_name(m, flat_index):
    pos = 0
    for name, s in m.params.layout:
        n = int(np.prod(s))
        if flat_index < pos + n:
            return f"{name}{tuple(int(i) for i in np.unravel_index(flat_index - pos, s))}"
        pos += n
    raise IndexError(flat_index)


@pytest.mark.parametrize("cell, E, L, p", CASES)
def test_forward_backward_matches_finite_differences(cell, E, L, p):
    m, x, y, h0, c0, masks = _setup(cell, E, L, p)
    if p:
        assert masks is not None and len(masks) == L
        both = [(mk == 0).any() and (mk != 0).any() for mk in masks]
        assert all(both), "seeded masks should drop some units and keep others in every layer"
    else:
        assert masks is None

    grads = m.params.zeros_like()
    grads.flat[:] = np.nan  # forward_backward must overwrite every element
    loss, state = m.forward_backward(x, y, _state(h0, c0), grads, masks)
    analytic = grads.flat.copy()
    assert np.isfinite(analytic).all(), "some gradient elements were not written"

    # loss and state after T steps vs the float64 reference on the same weights and masks
    params = {k: v.copy() for k, v in m.params.views.items()}
    r_loss, r_grads, hT, cT = ref.model_loss(params, cell, x, y, h0, c0, masks)
    assert abs(loss - r_loss) <= 1e-12 * max(1.0, abs(r_loss))
    np.testing.assert_allclose(state.h, hT, rtol=0, atol=1e-12)
    if cell == "lstm":
        np.testing.assert_allclose(state.c, cT, rtol=0, atol=1e-12)
    else:
        assert state.c is None

    scratch = m.params.zeros_like()
    flat = m.params.flat

    def f():
        return m.forward_backward(x, y, _state(h0, c0), scratch, masks)[0]

    fd = ref.fd_grad(f, flat, EPS)

    diff = np.abs(analytic - fd)
    bad = diff > ATOL + RTOL * np.abs(fd)
    if bad.any():
        worst = np.argsort(-diff * bad)[:5]
        lines = [f"{_param_name(m, i)}: analytic {analytic[i]:.10e} fd {fd[i]:.10e} diff {diff[i]:.2e}"
                 for i in worst if bad[i]]
        pytest.fail(f"{int(bad.sum())}/{flat.size} gradient elements disagree with finite differences:\n"
                    + "\n".join(lines))
    # the analytic gradient equals the reference's too (names checked one by one)
    for name, g in r_grads.items():
        np.testing.assert_allclose(grads.views[name], g, rtol=1e-10, atol=1e-13, err_msg=name)


@pytest.mark.parametrize("cell", CELLS)
def test_forward_backward_leaves_inputs_alone_and_is_repeatable(cell):
    """The carried-in state is not modified, and a second call gives identical loss, gradients and
    state (grads are overwritten, not accumulated)."""
    m, x, y, h0, c0, masks = _setup(cell, E_SIZE, 2, DROPOUT)
    s0 = _state(h0, c0)
    g1, g2 = m.params.zeros_like(), m.params.zeros_like()
    g2.flat[:] = 123.0
    l1, st1 = m.forward_backward(x, y, s0, g1, masks)
    l2, st2 = m.forward_backward(x, y, s0, g2, masks)
    np.testing.assert_array_equal(s0.h, h0)
    if c0 is not None:
        np.testing.assert_array_equal(s0.c, c0)
    assert l1 == l2
    np.testing.assert_array_equal(g1.flat, g2.flat)
    np.testing.assert_array_equal(st1.h, st2.h)
    if c0 is not None:
        np.testing.assert_array_equal(st1.c, st2.c)
    # the returned state is a fresh array, not a view of a workspace the next call overwrites
    h_before = st1.h.copy()
    m.forward_backward(y, x, st1, g1, masks)
    np.testing.assert_array_equal(st1.h, h_before)
