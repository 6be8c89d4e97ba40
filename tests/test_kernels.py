"""The Numba model and kernels against the pure-NumPy float64 reference (tests/reference.py).

(a) float64 Model vs reference.model_loss: loss, every gradient, final state to ~1e-10;
(b) float32 Model (the production path) vs the float64 reference on the same weights;
(c) activations.tanh / sigmoid: float32 accuracy (njit and pure-Python paths), float64 exact;
(d) head kernels: fused softmax cross-entropy (incl. extreme logits), gather / scatter-add rows;
(e) Model.logits consistent with Model.loss;
(f) state chaining: one call over T steps == two calls over T/2 carrying the state.
"""
import math

import numba
import numpy as np
import pytest

from charrnn.engine.kernels import activations, head
from charrnn.engine.kernels.jit import FASTMATH
from charrnn.engine.model import Model, State
from charrnn.engine.params import Shape, init_params

try:  # tests/ is on sys.path under pytest's default (prepend) import mode
    import reference as ref
except ImportError:  # pragma: no cover
    from tests import reference as ref

CELLS = ["lstm", "gru", "rnn"]


def _case_id(cell, E, p):
    return f"{cell}-{'embed' if E else 'onehot'}-{'drop' if p else 'nodrop'}"


def _cases(E_on):
    return [pytest.param(cell, E, p, id=_case_id(cell, E, p))
            for cell in CELLS for E in (0, E_on) for p in (0.0, 0.3)]


def _make(cell, V, H, L, E, B, T, dtype, seed, scale=None, p=0.0):
    """A model with seeded weights plus random data, a random carried-in state and (p > 0) masks."""
    rng = np.random.default_rng(seed)
    m = Model(Shape(cell, V, H, L, E), dtype=dtype)
    if scale is None:
        init_params(m.params, rng)  # the production init
    else:
        m.params.flat[:] = rng.uniform(-scale, scale, size=len(m.params)).astype(dtype)
    x = rng.integers(0, V, size=(B, T))
    y = rng.integers(0, V, size=(B, T))
    h0 = rng.uniform(-1, 1, size=(L, B, H)).astype(dtype)
    c0 = rng.uniform(-1, 1, size=(L, B, H)).astype(dtype) if cell == "lstm" else None
    masks = m.dropout_masks(rng, p, B, T)
    return m, x, y, h0, c0, masks


def _f64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


def _reference(m, x, y, h0, c0, masks):
    params = {k: v.astype(np.float64) for k, v in m.params.views.items()}
    return ref.model_loss(params, m.cell, x, y, _f64(h0), _f64(c0),
                          None if masks is None else [_f64(mk) for mk in masks])


def _state(h0, c0):
    return State(h0.copy(), None if c0 is None else c0.copy())


# --------------------------------------------------------------------------------------------------
# (a) float64 model == reference
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell, E, p", _cases(5))
def test_float64_model_matches_reference(cell, E, p):
    V, H, B, T, L = 11, 7, 3, 6, 2
    m, x, y, h0, c0, masks = _make(cell, V, H, L, E, B, T, np.float64,
                                   seed=17 + CELLS.index(cell) + E, scale=0.6, p=p)
    # repeated ids (scatter-add must accumulate) and at least one unused id (zero gradient row)
    assert len(np.unique(x)) < x.size and len(np.unique(x)) < V
    grads = m.params.zeros_like()
    grads.flat[:] = np.nan
    loss, state = m.forward_backward(x, y, _state(h0, c0), grads, masks)
    r_loss, r_grads, hT, cT = _reference(m, x, y, h0, c0, masks)

    assert abs(loss - r_loss) <= 1e-10 * abs(r_loss), (loss, r_loss)
    assert set(r_grads) == set(grads.views)
    for name, g in r_grads.items():
        np.testing.assert_allclose(grads.views[name], g, rtol=1e-10, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(state.h, hT, rtol=0, atol=1e-10)
    if cell == "lstm":
        np.testing.assert_allclose(state.c, cT, rtol=0, atol=1e-10)
    else:
        assert state.c is None
    # Model.loss (sum, no dropout) agrees with the reference without masks
    if p == 0:
        s, st2 = m.loss(x, y, _state(h0, c0))
        assert abs(s - r_loss * x.size) <= 1e-10 * abs(s)
        np.testing.assert_array_equal(st2.h, state.h)


EDGE_SIZES = [  # V, H, L, E, B, T
    (2, 1, 1, 0, 1, 1),
    (2, 1, 3, 1, 1, 1),
    (3, 2, 1, 0, 1, 5),
    (4, 5, 2, 2, 5, 1),
    (7, 4, 4, 3, 2, 3),
]


@pytest.mark.parametrize("sizes", EDGE_SIZES, ids=lambda s: "V{}-H{}-L{}-E{}-B{}-T{}".format(*s))
@pytest.mark.parametrize("cell", CELLS)
def test_float64_model_matches_reference_edge_sizes(cell, sizes):
    """Single step, single stream, H=1, 4 layers; ids given as uint8 (any integer dtype is accepted)."""
    V, H, L, E, B, T = sizes
    m, x, y, h0, c0, masks = _make(cell, V, H, L, E, B, T, np.float64, seed=sum(sizes), scale=0.7, p=0.5)
    grads = m.params.zeros_like()
    grads.flat[:] = np.nan
    loss, state = m.forward_backward(x.astype(np.uint8), y.astype(np.uint8), _state(h0, c0), grads, masks)
    r_loss, r_grads, hT, cT = _reference(m, x, y, h0, c0, masks)
    assert abs(loss - r_loss) <= 1e-12 * abs(r_loss)
    for name, g in r_grads.items():
        np.testing.assert_allclose(grads.views[name], g, rtol=1e-10, atol=1e-13, err_msg=name)
    np.testing.assert_allclose(state.h, hT, rtol=0, atol=1e-12)
    if cell == "lstm":
        np.testing.assert_allclose(state.c, cT, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# (b) float32 model (production path) vs the float64 reference
# --------------------------------------------------------------------------------------------------

# Measured on this machine (V=30, H=32, B=4, T=20, L=2): loss rel err <= 1e-8, gradient max abs err
# <= 5e-8 (gradients up to ~0.1), final state <= 6e-7. The tolerances leave >= 10x headroom.
F32_LOSS_RTOL = 1e-6
F32_GRAD_ATOL = 1e-6
F32_GRAD_RTOL = 1e-4
F32_STATE_ATOL = 1e-5


@pytest.mark.parametrize("scale", [None, 0.3], ids=["init", "scale0.3"])
@pytest.mark.parametrize("cell, E, p", _cases(16))
def test_float32_model_close_to_float64_reference(cell, E, p, scale):
    V, H, B, T, L = 30, 32, 4, 20, 2
    m, x, y, h0, c0, masks = _make(cell, V, H, L, E, B, T, np.float32,
                                   seed=23 + CELLS.index(cell) + E, scale=scale, p=p)
    assert m.params.flat.dtype == np.float32
    grads = m.params.zeros_like()
    loss, state = m.forward_backward(x, y, _state(h0, c0), grads, masks)
    assert state.h.dtype == np.float32
    r_loss, r_grads, hT, cT = _reference(m, x, y, h0, c0, masks)

    loss_err = abs(loss - r_loss) / abs(r_loss)
    assert loss_err <= F32_LOSS_RTOL, loss_err
    worst = max(np.abs(grads.views[k] - g).max() for k, g in r_grads.items())
    for name, g in r_grads.items():
        np.testing.assert_allclose(grads.views[name], g, rtol=F32_GRAD_RTOL, atol=F32_GRAD_ATOL,
                                   err_msg=f"{name} (max grad err over all params {worst:.2e})")
    np.testing.assert_allclose(state.h, hT, rtol=0, atol=F32_STATE_ATOL)
    if cell == "lstm":
        np.testing.assert_allclose(state.c, cT, rtol=0, atol=F32_STATE_ATOL)
    print(f"[f32 vs f64] {cell} E={E} p={p} scale={scale}: loss rel {loss_err:.1e}, grad max abs {worst:.1e}, "
          f"h max abs {np.abs(state.h - hT).max():.1e}")


# --------------------------------------------------------------------------------------------------
# (c) activations
# --------------------------------------------------------------------------------------------------


def _activation_loop(decorator):
    @decorator
    def loop(xs, out_t, out_s):
        for i in range(xs.size):
            out_t[i] = activations.tanh(xs[i])
            out_s[i] = activations.sigmoid(xs[i])
    return loop


_JIT_LOOPS = {
    "njit": _activation_loop(numba.njit),
    "njit-fastmath": _activation_loop(numba.njit(fastmath=set(FASTMATH))),
}


def _grid32():
    dense = np.linspace(-20, 20, 400_001).astype(np.float32)
    clamp = np.float32(7.90531110763549805)
    around_clamp = np.concatenate([clamp + np.arange(-64, 64, dtype=np.float32) * np.float32(1e-6),
                                   -clamp + np.arange(-64, 64, dtype=np.float32) * np.float32(1e-6)])
    tiny = np.linspace(-1e-3, 1e-3, 20_001).astype(np.float32)
    return np.concatenate([dense, around_clamp, tiny, np.float32([0.0, -0.0, 1e-30, -1e-30, 20, -20])])


def _sigmoid64(x):
    return ref.sigmoid(x)


@pytest.mark.parametrize("loop", list(_JIT_LOOPS), ids=list(_JIT_LOOPS))
def test_activations_float32_jit_accuracy(loop):
    xs = _grid32()
    out_t = np.empty_like(xs)
    out_s = np.empty_like(xs)
    _JIT_LOOPS[loop](xs, out_t, out_s)
    x64 = xs.astype(np.float64)
    err_t = np.abs(out_t - np.tanh(x64))
    err_s = np.abs(out_s - _sigmoid64(x64))
    assert err_t.max() < 1e-6, (err_t.max(), xs[err_t.argmax()])
    assert err_s.max() < 1e-6, (err_s.max(), xs[err_s.argmax()])
    # tanh(0) = 0, range, odd symmetry, and monotone up to a few float32 ulps (the rational form is
    # not exactly monotone near saturation: measured steps back of <= 3.6e-7 around |x| ~ 7)
    np.testing.assert_array_equal(out_t[xs == 0], 0)
    assert np.abs(out_t).max() <= 1.0 and out_s.min() >= 0.0 and out_s.max() <= 1.0
    neg = np.empty_like(xs)
    _JIT_LOOPS[loop](-xs, neg, np.empty_like(xs))
    np.testing.assert_array_equal(neg, -out_t)
    order = np.argsort(xs, kind="stable")
    assert np.diff(out_t[order]).min() > -1e-6 and np.diff(out_s[order]).min() > -1e-6
    # small arguments: relative accuracy too (tanh(x) ~ x)
    small = (np.abs(xs) < 1e-3) & (xs != 0)
    rel = np.abs(out_t[small] - np.tanh(x64[small])) / np.abs(np.tanh(x64[small]))
    assert rel.max() < 1e-6


def test_activations_float32_python_path_accuracy():
    xs = np.concatenate([np.linspace(-20, 20, 40_001).astype(np.float32),
                         np.float32([0.0, 1e-5, -1e-5, 3e-4, 7.9053, -7.9053, 8.0, -8.0])])
    out_t = np.array([activations.tanh(v) for v in xs])
    out_s = np.array([activations.sigmoid(v) for v in xs])
    assert out_t.dtype == np.float32 and out_s.dtype == np.float32  # stays in float32
    x64 = xs.astype(np.float64)
    assert np.abs(out_t - np.tanh(x64)).max() < 1e-6
    assert np.abs(out_s - _sigmoid64(x64)).max() < 1e-6
    assert activations.tanh(np.float32(1e-5)) == np.float32(1e-5)  # tiny-|x| branch: exact


def test_activations_float64_exact():
    xs = np.concatenate([np.linspace(-20, 20, 100_001), [0.0, 1e-300, -1e-300, 1e-8, 50.0, -50.0, 800.0, -800.0]])
    exact_t = np.array([math.tanh(v) for v in xs])
    exact_s = np.array([0.5 + 0.5 * math.tanh(0.5 * v) for v in xs])
    # pure-Python path: math.tanh itself
    py_t = np.array([activations.tanh(np.float64(v)) for v in xs[::10]])
    py_s = np.array([activations.sigmoid(np.float64(v)) for v in xs[::10]])
    np.testing.assert_array_equal(py_t, exact_t[::10])
    np.testing.assert_array_equal(py_s, exact_s[::10])
    assert activations.tanh(0.25) == math.tanh(0.25)  # a Python float takes the float64 path too
    # njit path: libm tanh, bit-identical
    for loop in _JIT_LOOPS.values():
        out_t = np.empty_like(xs)
        out_s = np.empty_like(xs)
        loop(xs, out_t, out_s)
        np.testing.assert_array_equal(out_t, exact_t)
        np.testing.assert_array_equal(out_s, exact_s)
    # and the sigmoid formula is the logistic function to rounding
    np.testing.assert_allclose(exact_s, _sigmoid64(xs), rtol=0, atol=4e-16)


# --------------------------------------------------------------------------------------------------
# (d) head kernels
# --------------------------------------------------------------------------------------------------


def _log_softmax64(z):
    z = np.asarray(z, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _extreme_logits(dtype, seed=0):
    rng = np.random.default_rng(seed)
    N, V = 40, 13
    z = rng.normal(scale=3.0, size=(N, V))
    y = rng.integers(0, V, size=N)
    z[0] = 80.0                      # all equal, large
    z[1] = -80.0                     # all equal, very negative
    z[2] = -80.0
    z[2, 5] = 80.0                   # one huge winner ...
    y[2] = 0                         # ... and the target is a huge loser: loss ~ 160
    z[3] = 80.0
    z[3, 7] = -80.0
    y[3] = 7                         # target is the only -80 among +80s
    z[4] = rng.choice([-80.0, 80.0], size=V)
    z[5, :] = rng.normal(size=V)
    z[5, 2] = 80.0
    y[5] = 2                         # target is the huge winner: loss ~ 0
    return z.astype(dtype), y.astype(np.int32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_softmax_xent_matches_numpy_including_extreme_logits(dtype):
    z, y = _extreme_logits(dtype)
    N, V = z.shape
    logp = _log_softmax64(z)
    want_sum = -logp[np.arange(N), y].sum()
    want_grad = np.exp(logp)
    want_grad[np.arange(N), y] -= 1.0
    scale = dtype(1.0 / N)
    want_grad *= float(scale)

    rtol = 1e-6 if dtype == np.float32 else 1e-12
    z_in = z.copy()
    total = head.softmax_xent_loss(z_in, y)
    np.testing.assert_array_equal(z_in, z)  # untouched
    assert np.isfinite(total)
    assert abs(total - want_sum) <= rtol * abs(want_sum), (total, want_sum)

    g = z.copy()
    total_b = head.softmax_xent_backward(g, y, scale)
    assert np.isfinite(total_b) and np.isfinite(g).all()
    assert g.dtype == dtype
    assert abs(total_b - want_sum) <= rtol * abs(want_sum), (total_b, want_sum)
    atol = 1e-8 if dtype == np.float32 else 1e-15
    np.testing.assert_allclose(g, want_grad, rtol=rtol, atol=atol)
    # each gradient row sums to zero (softmax sums to one)
    np.testing.assert_allclose(g.sum(axis=1), 0, atol=1e-7 if dtype == np.float32 else 1e-15)
    # per-row values at the extreme rows
    per_row = -logp[np.arange(N), y]
    assert per_row[2] == pytest.approx(160.0, rel=1e-6)
    assert per_row[5] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_gather_and_scatter_rows(dtype):
    rng = np.random.default_rng(3)
    T, B, V, G = 7, 5, 9, 12
    ids = rng.integers(0, V, size=(T, B)).astype(np.int32)
    ids[0, :] = 4  # guaranteed repeats
    table = rng.normal(size=(V, G)).astype(dtype)
    bias = rng.normal(size=G).astype(dtype)

    out = np.full((T, B, G), np.nan, dtype=dtype)
    head.gather_rows(out, table, ids, bias)
    np.testing.assert_array_equal(out, table[ids] + bias)

    grads = rng.normal(size=(T, B, G)).astype(dtype)
    start = rng.normal(size=(V, G)).astype(dtype)  # scatter ADDS to what is there
    dtable = start.copy()
    head.scatter_add_rows(dtable, grads, ids)
    want = start.astype(np.float64)
    np.add.at(want, ids.reshape(-1), grads.reshape(-1, G).astype(np.float64))
    tol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(dtable, want, rtol=tol, atol=tol)
    unused = np.setdiff1d(np.arange(V), ids)
    np.testing.assert_array_equal(dtable[unused], start[unused])


# --------------------------------------------------------------------------------------------------
# (e) logits vs loss
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("cell", CELLS)
def test_logits_consistent_with_loss(cell, dtype):
    V, H, B, T, L, E = 13, 9, 3, 7, 2, 6
    m, x, y, h0, c0, _ = _make(cell, V, H, L, E, B, T, dtype, seed=31 + CELLS.index(cell), scale=0.5)
    logits, st_a = m.logits(x, _state(h0, c0))
    assert logits.shape == (B, T, V) and logits.dtype == dtype
    loss_sum, st_b = m.loss(x, y, _state(h0, c0))
    logp = _log_softmax64(logits.reshape(-1, V)).reshape(B, T, V)
    want = -np.take_along_axis(logp, y[..., None], axis=-1).sum()
    rtol = 1e-6 if dtype == np.float32 else 1e-12
    assert abs(loss_sum - want) <= rtol * abs(want), (loss_sum, want)
    np.testing.assert_array_equal(st_a.h, st_b.h)
    if cell == "lstm":
        np.testing.assert_array_equal(st_a.c, st_b.c)
    # and both agree with the reference forward
    params = {k: v.astype(np.float64) for k, v in m.params.views.items()}
    r_logits, hT, cT = ref.logits_forward(params, cell, x, _f64(h0), _f64(c0))
    atol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(logits, r_logits, rtol=0, atol=atol)
    np.testing.assert_allclose(st_a.h, hT, rtol=0, atol=atol)
    # forward_backward's mean loss without dropout is the same quantity / (B*T)
    fb_loss, _ = m.forward_backward(x, y, _state(h0, c0), m.params.zeros_like())
    assert abs(fb_loss * x.size - loss_sum) <= rtol * abs(loss_sum)


# --------------------------------------------------------------------------------------------------
# (f) state chaining
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("cell", CELLS)
def test_state_chaining(cell, dtype):
    V, H, B, T, L, E = 10, 8, 3, 8, 2, 0
    m, x, y, h0, c0, _ = _make(cell, V, H, L, E, B, T, dtype, seed=41 + CELLS.index(cell), scale=0.5)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    h = T // 2

    full, st_full = m.loss(x, y, _state(h0, c0))
    first, st1 = m.loss(x[:, :h], y[:, :h], _state(h0, c0))
    second, st2 = m.loss(x[:, h:], y[:, h:], st1)
    assert abs(first + second - full) <= tol * abs(full)
    np.testing.assert_allclose(st2.h, st_full.h, rtol=0, atol=tol)
    if cell == "lstm":
        np.testing.assert_allclose(st2.c, st_full.c, rtol=0, atol=tol)

    # the same through forward_backward (mean losses of equal-size halves average) and logits
    g = m.params.zeros_like()
    mean_full, fb_full = m.forward_backward(x, y, _state(h0, c0), g)
    mean1, fb1 = m.forward_backward(x[:, :h], y[:, :h], _state(h0, c0), g)
    mean2, fb2 = m.forward_backward(x[:, h:], y[:, h:], fb1, g)
    assert abs((mean1 + mean2) / 2 - mean_full) <= tol * abs(mean_full)
    np.testing.assert_allclose(fb2.h, fb_full.h, rtol=0, atol=tol)
    lg_full, _ = m.logits(x, _state(h0, c0))
    lg1, s1 = m.logits(x[:, :h], _state(h0, c0))
    lg2, s2 = m.logits(x[:, h:], s1)
    np.testing.assert_allclose(np.concatenate([lg1, lg2], axis=1), lg_full, rtol=0, atol=tol)
    np.testing.assert_allclose(s2.h, st_full.h, rtol=0, atol=tol)


def test_model_pass_restores_the_callers_blas_threads():
    """A pass pins numpy's OpenBLAS to one thread (charrnn threads over stream groups itself) and
    gives the caller's setting back, so other numpy work in the process keeps its speed."""
    from charrnn.engine.kernels.blas import _numpy_openblas
    lib = _numpy_openblas()
    if not lib:
        pytest.skip("numpy is not linked to a bundled OpenBLAS here")
    get, put = lib
    before = get()
    try:
        put(2)
        m = Model(Shape("lstm", 5, 8, 2), dtype=np.float32)
        init_params(m.params, np.random.default_rng(0))
        m.loss(np.zeros((4, 6), int), np.ones((4, 6), int), m.zero_state(4))
        assert get() == 2
    finally:
        put(before)


def test_dropout_masks_jitted_and_numpy_agree_and_keep_the_rate():
    from charrnn.engine.kernels import dropout
    a = np.empty((9, 7, 33), np.float32)  # an odd count: the last hash gives one mask
    dropout.fill_masks(a, 2 ** 63 + 5, 0.3)
    b = np.empty_like(a)
    dropout._fill_numpy(b.reshape(-1), np.uint64(2 ** 63 + 5), np.uint64(round(0.3 * 2 ** 32)),
                        np.float32(1 / 0.7))
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) == {np.float32(0), np.float32(1 / 0.7)}
    big = np.empty(400_000, np.float64)
    dropout.fill_masks(big, 17, 0.3)
    assert abs((big == 0).mean() - 0.3) < 0.005  # 400k draws: the standard error is 0.0007
    again = np.empty_like(big)
    dropout.fill_masks(again, 17, 0.3)
    np.testing.assert_array_equal(big, again)
    dropout.fill_masks(again, 18, 0.3)
    assert (big != again).mean() > 0.3  # another key, other masks
