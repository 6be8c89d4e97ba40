"""Optimizers, clipping and lr schedules: NumPy references, torch parity, checkpoint round-trips.

Vectors are small so the suite stays fast with NUMBA_DISABLE_JIT=1 (kernels then run as Python loops).
"""
import math

import numpy as np
import pytest

from charrnn.errors import CharrnnError, UsageError
from charrnn.engine.optim import (
    SGD,
    Adagrad,
    Adam,
    Optimizer,
    RMSprop,
    clip_grad_norm,
    clip_grad_value,
    global_norm,
    lr_at,
    make_optimizer,
)

N = 37
STEPS = 5
LRS = [0.01, 0.02, 0.005, 0.01, 0.03]  # a changing lr checks that step() uses the lr it is given


def _data(seed=0, dtype=np.float64):
    """Initial params and one gradient per step."""
    rng = np.random.default_rng(seed)
    p0 = rng.standard_normal(N).astype(dtype)
    grads = [rng.standard_normal(N).astype(dtype) for _ in range(STEPS)]
    return p0, grads


# --- plain-NumPy references (textbook formulas, decoupled weight decay) ---------------------------

def _ref_adam(p, grads, lrs, beta1, beta2, eps, wd):
    p = p.copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        p = p - lr * wd * p
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1 ** t)
        v_hat = v / (1 - beta2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def _ref_rmsprop(p, grads, lrs, alpha, eps, wd):
    p = p.copy()
    v = np.zeros_like(p)
    for g, lr in zip(grads, lrs):
        p = p - lr * wd * p
        v = alpha * v + (1 - alpha) * g * g
        p = p - lr * g / (np.sqrt(v) + eps)
    return p


def _ref_adagrad(p, grads, lrs, eps, wd):
    p = p.copy()
    s = np.zeros_like(p)
    for g, lr in zip(grads, lrs):
        p = p - lr * wd * p
        s = s + g * g
        p = p - lr * g / (np.sqrt(s) + eps)
    return p


def _ref_sgd(p, grads, lrs, momentum, wd):
    p = p.copy()
    buf = None
    for g, lr in zip(grads, lrs):
        p = p - lr * wd * p
        buf = g.copy() if buf is None else momentum * buf + g
        p = p - lr * (buf if momentum > 0 else g)
    return p


def _run(opt: Optimizer, p0, grads, lrs=LRS):
    p = p0.copy()
    for g, lr in zip(grads, lrs):
        opt.step(p, g, lr)
    return p


CASES = [
    ("adam", lambda wd: Adam(N, beta1=0.8, beta2=0.95, eps=1e-6, weight_decay=wd, dtype=np.float64),
     lambda p, gs, wd: _ref_adam(p, gs, LRS, 0.8, 0.95, 1e-6, wd)),
    ("rmsprop", lambda wd: RMSprop(N, alpha=0.9, eps=1e-6, weight_decay=wd, dtype=np.float64),
     lambda p, gs, wd: _ref_rmsprop(p, gs, LRS, 0.9, 1e-6, wd)),
    ("adagrad", lambda wd: Adagrad(N, eps=1e-10, weight_decay=wd, dtype=np.float64),
     lambda p, gs, wd: _ref_adagrad(p, gs, LRS, 1e-10, wd)),
    ("sgd-momentum", lambda wd: SGD(N, momentum=0.9, weight_decay=wd, dtype=np.float64),
     lambda p, gs, wd: _ref_sgd(p, gs, LRS, 0.9, wd)),
    ("sgd-plain", lambda wd: SGD(N, momentum=0.0, weight_decay=wd, dtype=np.float64),
     lambda p, gs, wd: _ref_sgd(p, gs, LRS, 0.0, wd)),
]


@pytest.mark.parametrize("wd", [0.0, 0.1])
@pytest.mark.parametrize("name,make,ref", CASES, ids=[c[0] for c in CASES])
def test_matches_numpy_reference(name, make, ref, wd):
    p0, grads = _data()
    grads_before = [g.copy() for g in grads]
    got = _run(make(wd), p0, grads)
    np.testing.assert_allclose(got, ref(p0, grads, wd), rtol=1e-12, atol=1e-14)
    for g, g0 in zip(grads, grads_before):  # step must not touch the gradients
        np.testing.assert_array_equal(g, g0)


@pytest.mark.parametrize("name", ["adam", "rmsprop", "adagrad", "sgd"])
def test_float32_stays_float32_and_close_to_float64(name):
    p0, grads = _data(1)
    kw = dict(beta1=0.9, beta2=0.999, eps=1e-6, momentum=0.9, alpha=0.95, weight_decay=0.01)
    p64 = _run(make_optimizer(name, N, dtype=np.float64, **kw), p0, grads)
    opt32 = make_optimizer(name, N, dtype=np.float32, **kw)
    p32 = _run(opt32, p0.astype(np.float32), [g.astype(np.float32) for g in grads])
    assert p32.dtype == np.float32
    assert all(a.dtype == np.float32 for k, a in opt32.state_arrays().items() if k != "optim.t")
    np.testing.assert_allclose(p32, p64, rtol=1e-5, atol=1e-6)


def test_float32_kernels_get_float32_scalars():
    """A float64 scalar next to float32 arrays would make Numba compute the update in float64."""
    from charrnn.engine.kernels import optim as k

    kernels = [k._adam_update, k._rmsprop_update, k._adagrad_update, k._sgd_momentum_update, k._sgd_update,
               k._scale_inplace, k._clamp_inplace]
    if not hasattr(k._adam_update, "signatures"):
        pytest.skip("JIT disabled")
    p0, grads = _data(2, np.float32)
    for name, mom in [("adam", 0.9), ("rmsprop", 0.9), ("adagrad", 0.9), ("sgd", 0.9), ("sgd", 0.0)]:
        _run(make_optimizer(name, N, momentum=mom, weight_decay=0.01), p0, grads)
    g = grads[0].copy()
    clip_grad_norm(g, 1e-3)
    clip_grad_value(g, 1e-4)
    for kern in kernels:
        float32_sigs = [sig for sig in kern.signatures if any("float32" in str(t) for t in sig)]
        assert float32_sigs, kern
        for sig in float32_sigs:
            assert not any("float64" in str(t) for t in sig), (kern, sig)


# --- torch parity -----------------------------------------------------------------------------------

def _torch_run(torch_opt_cls, p0, grads, lrs=LRS, **kw):
    torch = pytest.importorskip("torch")
    p = torch.tensor(p0.copy(), dtype=torch.float64, requires_grad=True)
    opt = torch_opt_cls([p], lr=lrs[0], **kw)
    for g, lr in zip(grads, lrs):
        for group in opt.param_groups:
            group["lr"] = lr
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    return p.detach().numpy()


TORCH_CASES = [
    ("Adam", dict(betas=(0.8, 0.95), eps=1e-6),
     lambda: Adam(N, beta1=0.8, beta2=0.95, eps=1e-6, dtype=np.float64)),
    ("AdamW", dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1),
     lambda: Adam(N, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1, dtype=np.float64)),
    ("RMSprop", dict(alpha=0.95, eps=1e-8),
     lambda: RMSprop(N, alpha=0.95, eps=1e-8, dtype=np.float64)),
    ("Adagrad", dict(eps=1e-10),
     lambda: Adagrad(N, eps=1e-10, dtype=np.float64)),
    ("SGD", dict(momentum=0.9),
     lambda: SGD(N, momentum=0.9, dtype=np.float64)),
    ("SGD", dict(momentum=0.0),
     lambda: SGD(N, momentum=0.0, dtype=np.float64)),
]


@pytest.mark.parametrize("torch_name,torch_kw,make", TORCH_CASES,
                         ids=["adam", "adamw", "rmsprop", "adagrad", "sgd-momentum", "sgd-plain"])
def test_matches_torch(torch_name, torch_kw, make):
    torch = pytest.importorskip("torch")
    p0, grads = _data(3)
    want = _torch_run(getattr(torch.optim, torch_name), p0, grads, **torch_kw)
    np.testing.assert_allclose(_run(make(), p0, grads), want, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_torch(max_norm):
    torch = pytest.importorskip("torch")
    _, grads = _data(4)
    g = grads[0]
    t = torch.zeros(N, dtype=torch.float64, requires_grad=True)
    t.grad = torch.tensor(g.copy())
    want_norm = float(torch.nn.utils.clip_grad_norm_([t], max_norm))
    ours = g.copy()
    norm = clip_grad_norm(ours, max_norm)
    assert norm == pytest.approx(want_norm, rel=1e-12)
    np.testing.assert_allclose(ours, t.grad.numpy(), rtol=1e-12)
    if max_norm < norm:
        assert global_norm(ours) == pytest.approx(max_norm, rel=1e-5)
    else:
        np.testing.assert_array_equal(ours, g)


# --- checkpoint state -------------------------------------------------------------------------------

@pytest.mark.parametrize("name,momentum", [("adam", 0.9), ("rmsprop", 0.9), ("adagrad", 0.9),
                                           ("sgd", 0.9), ("sgd", 0.0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_state_round_trip_is_bit_identical(name, momentum, dtype):
    rng = np.random.default_rng(5)
    p0 = rng.standard_normal(N).astype(dtype)
    grads = [rng.standard_normal(N).astype(dtype) for _ in range(6)]
    lrs = [0.01] * 6
    make = lambda: make_optimizer(name, N, momentum=momentum, weight_decay=0.01, dtype=dtype)  # noqa: E731

    straight = _run(make(), p0, grads, lrs)

    first = make()
    p = _run(first, p0, grads[:3], lrs[:3])
    saved = first.state_arrays()
    assert saved["optim.t"].dtype == np.int64 and int(saved["optim.t"][0]) == 3
    first.step(p.copy(), grads[3], 1.0)  # later steps must not leak into the saved copy
    resumed = make()
    resumed.load_state({"params": p, **saved})  # non-optim keys are ignored
    assert resumed.t == 3
    p = _run(resumed, p, grads[3:], lrs[3:])
    np.testing.assert_array_equal(p, straight)


def test_state_names():
    assert set(Adam(3).state_arrays()) == {"optim.m", "optim.v", "optim.t"}
    assert set(RMSprop(3).state_arrays()) == {"optim.v", "optim.t"}
    assert set(Adagrad(3).state_arrays()) == {"optim.sum", "optim.t"}
    assert set(SGD(3, momentum=0.9).state_arrays()) == {"optim.buf", "optim.t"}
    assert set(SGD(3, momentum=0.0).state_arrays()) == {"optim.t"}


def test_load_state_rejects_mismatches():
    opt = Adam(N, dtype=np.float32)
    good = opt.state_arrays()
    bad_cases = [
        {**good, "optim.m": np.zeros(N + 1, np.float32)},                  # wrong length
        {**good, "optim.v": np.zeros((N, 1), np.float32)},                 # wrong shape
        {**good, "optim.m": np.zeros(N, np.float64)},                      # wrong dtype
        {k: v for k, v in good.items() if k != "optim.v"},                 # missing moment
        {**good, "optim.t": np.array([1.5])},                              # non-integer step
        {**good, "optim.t": np.array([1, 2], np.int64)},                   # not one element
        RMSprop(N).state_arrays(),                                         # other optimizer
        {**good, "optim.buf": np.zeros(N, np.float32)},                    # unexpected entry
    ]
    for bad in bad_cases:
        with pytest.raises(CharrnnError):
            opt.load_state(bad)
    with pytest.raises(CharrnnError):
        Adam(N + 1, dtype=np.float32).load_state(good)


def test_failed_load_leaves_state_untouched():
    p0, grads = _data(6)
    opt = Adam(N, dtype=np.float64)
    _run(opt, p0, grads[:2], LRS[:2])
    before = opt.state_arrays()
    bad = {**{k: np.full_like(v, 7) for k, v in before.items()}, "optim.v": np.zeros(N - 1)}
    with pytest.raises(CharrnnError):
        opt.load_state(bad)
    for k, v in opt.state_arrays().items():
        np.testing.assert_array_equal(v, before[k])


def test_load_accepts_zero_d_step_counter():
    opt = SGD(N, momentum=0.0)
    opt.load_state({"optim.t": np.int64(12)})
    assert opt.t == 12


# --- argument checks --------------------------------------------------------------------------------

def test_step_rejects_bad_buffers():
    opt = Adam(N, dtype=np.float32)
    p = np.zeros(N, np.float32)
    g = np.zeros(N, np.float32)
    with pytest.raises(ValueError):
        opt.step(p.astype(np.float64), g, 0.1)
    with pytest.raises(ValueError):
        opt.step(p[:-1], g[:-1], 0.1)
    with pytest.raises(ValueError):
        opt.step(np.zeros(2 * N, np.float32)[::2], g, 0.1)
    with pytest.raises(ValueError):
        opt.step(p, g, -1.0)
    with pytest.raises(ValueError):
        opt.step(p, p, 0.1)
    assert opt.t == 0  # nothing counted when the step was refused


def test_make_optimizer():
    kw = dict(beta1=0.9, beta2=0.99, eps=1e-8, momentum=0.5, alpha=0.9, weight_decay=0.0)
    assert isinstance(make_optimizer("adam", 4, **kw), Adam)
    assert isinstance(make_optimizer("RMSprop", 4, **kw), RMSprop)
    assert isinstance(make_optimizer("adagrad", 4, **kw), Adagrad)
    sgd = make_optimizer("sgd", 4, **kw)
    assert isinstance(sgd, SGD) and sgd.momentum == 0.5 and sgd.name == "sgd"
    assert make_optimizer("adam", 4, **kw).dtype == np.float32
    with pytest.raises(UsageError):
        make_optimizer("lion", 4, **kw)
    with pytest.raises(UsageError):
        make_optimizer("adam", 4, **{**kw, "beta1": 1.0})
    with pytest.raises(UsageError):
        make_optimizer("rmsprop", 4, **{**kw, "eps": 0.0})


# --- norms and clipping -----------------------------------------------------------------------------

def test_global_norm():
    g = np.array([3.0, 4.0], np.float32)
    assert global_norm(g) == 5.0
    assert global_norm(np.zeros(0)) == 0.0
    big = np.full(N, 1e20, np.float32)  # squares overflow float32 but not the float64 accumulator
    assert global_norm(big) == pytest.approx(1e20 * math.sqrt(N), rel=1e-6)
    for bad in (np.nan, np.inf, -np.inf):
        x = np.ones(N, np.float32)
        x[5] = bad
        assert not math.isfinite(global_norm(x))


def test_clip_grad_norm_disabled_and_nonfinite():
    _, grads = _data(7)
    g = grads[0] * 100
    before = g.copy()
    assert clip_grad_norm(g, 0.0) == pytest.approx(np.linalg.norm(before))
    np.testing.assert_array_equal(g, before)
    g[3] = np.nan
    before = g.copy()
    assert math.isnan(clip_grad_norm(g, 1.0))
    np.testing.assert_array_equal(g, before)  # left for the divergence guard to see


def test_clip_grad_norm_float32():
    g = np.full(N, 10.0, np.float32)
    norm = clip_grad_norm(g, 1.0)
    assert g.dtype == np.float32
    assert norm == pytest.approx(10.0 * math.sqrt(N))
    assert global_norm(g) == pytest.approx(1.0, rel=1e-5)


def test_clip_grad_value():
    g = np.array([-3.0, -0.5, 0.0, 0.5, 3.0, np.nan], np.float32)
    clip_grad_value(g, 1.0)
    np.testing.assert_array_equal(g, np.array([-1.0, -0.5, 0.0, 0.5, 1.0, np.nan], np.float32))
    g = np.array([-3.0, 3.0])
    clip_grad_value(g, 0.0)
    np.testing.assert_array_equal(g, [-3.0, 3.0])


# --- lr schedules -----------------------------------------------------------------------------------

def test_lr_constant_and_warmup():
    assert [lr_at(s, lr=0.1, schedule="constant") for s in (0, 10, 10**6)] == [0.1, 0.1, 0.1]
    ramp = [lr_at(s, lr=0.1, schedule="constant", warmup_steps=4) for s in range(6)]
    np.testing.assert_allclose(ramp, [0.025, 0.05, 0.075, 0.1, 0.1, 0.1])


def test_lr_step_decay():
    kw = dict(lr=1.0, schedule="step", decay_rate=0.5, decay_every=10)
    assert [lr_at(s, **kw) for s in (0, 9, 10, 19, 20, 35)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.125]
    # counted from the end of warmup: no jump when warmup ends
    assert lr_at(5, warmup_steps=5, **kw) == 1.0
    assert lr_at(15, warmup_steps=5, **kw) == 0.5
    assert lr_at(1000, min_lr=0.01, **kw) == 0.01  # min_lr is a floor
    with pytest.raises(ValueError):
        lr_at(0, lr=1.0, schedule="step", decay_rate=0.5, decay_every=0)


def test_lr_cosine():
    kw = dict(lr=0.1, schedule="cosine", warmup_steps=10, min_lr=0.001, total_steps=111)
    assert lr_at(0, **kw) == pytest.approx(0.01)
    assert lr_at(10, **kw) == pytest.approx(0.1)  # first step after warmup
    assert lr_at(60, **kw) == pytest.approx((0.1 + 0.001) / 2)  # half way
    assert lr_at(110, **kw) == pytest.approx(0.001)  # last step
    assert lr_at(5000, **kw) == pytest.approx(0.001)
    assert lr_at(5, **{**kw, "warmup_steps": 0}) < 0.1
    post = [lr_at(s, **kw) for s in range(10, 120)]
    assert all(a >= b for a, b in zip(post, post[1:]))  # monotone after warmup
    with pytest.raises(ValueError):
        lr_at(0, lr=0.1, schedule="cosine")


def test_lr_never_negative_and_bad_args():
    for sched, extra in [("constant", {}), ("step", dict(decay_rate=0.0, decay_every=1)),
                         ("cosine", dict(total_steps=20))]:
        for s in range(0, 40):
            assert lr_at(s, lr=0.1, schedule=sched, warmup_steps=3, **extra) >= 0.0
    with pytest.raises(ValueError):
        lr_at(0, lr=0.1, schedule="exponential")
    with pytest.raises(ValueError):
        lr_at(-1, lr=0.1)
    with pytest.raises(ValueError):
        lr_at(0, lr=-0.1)


def test_lr_linear_and_time_fraction():
    kw = dict(lr=0.1, schedule="linear", min_lr=0.0, total_steps=11)
    np.testing.assert_allclose([lr_at(s, **kw) for s in (0, 5, 10, 20)], [0.1, 0.05, 0.0, 0.0], atol=1e-12)
    # time-bounded: the time fraction alone drives the decay ...
    assert lr_at(3, lr=0.1, schedule="linear", time_fraction=0.25) == pytest.approx(0.075)
    assert lr_at(3, lr=0.1, schedule="cosine", min_lr=0.01, time_fraction=0.5) == pytest.approx(0.055)
    assert lr_at(3, lr=0.1, schedule="cosine", min_lr=0.01, time_fraction=1.0) == pytest.approx(0.01)
    # ... and with a step budget too, whichever is further along wins
    assert lr_at(5, time_fraction=0.2, **kw) == pytest.approx(0.05)
    assert lr_at(1, time_fraction=0.8, **kw) == pytest.approx(0.02)
    # warmup stays a step ramp; constant and step schedules ignore the time
    assert lr_at(0, lr=0.1, schedule="cosine", warmup_steps=4, time_fraction=0.9) == pytest.approx(0.025)
    assert lr_at(7, lr=0.1, schedule="constant", time_fraction=0.9) == 0.1
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError):
            lr_at(0, lr=0.1, schedule="cosine", time_fraction=bad)
    with pytest.raises(ValueError):
        lr_at(0, lr=0.1, schedule="linear")


def test_lr_decay_fraction_holds_then_decays():
    """decay_fraction=0.2: lr held for the first 80 % of the budget, then the schedule over the last 20 %."""
    kw = dict(lr=0.1, schedule="linear", min_lr=0.0, total_steps=101, decay_fraction=0.2)
    assert [lr_at(s, **kw) for s in (0, 50, 80)] == [0.1, 0.1, 0.1]
    assert lr_at(90, **kw) == pytest.approx(0.05)
    assert lr_at(100, **kw) == pytest.approx(0.0)
    # time-bounded alike, and the cosine shape on the decayed part
    assert lr_at(3, lr=0.1, schedule="cosine", time_fraction=0.7, decay_fraction=0.2) == 0.1
    assert lr_at(3, lr=0.1, schedule="cosine", time_fraction=0.9, decay_fraction=0.2) == pytest.approx(0.05)
    # 1.0 is the plain schedule
    plain = dict(lr=0.1, schedule="cosine", total_steps=50)
    assert all(lr_at(s, **plain) == lr_at(s, decay_fraction=1.0, **plain) for s in range(60))
    post = [lr_at(s, **kw) for s in range(0, 120)]
    assert all(a >= b for a, b in zip(post, post[1:]))
    for bad in (0.0, -0.5, 1.01, float("nan")):
        with pytest.raises(ValueError):
            lr_at(0, lr=0.1, schedule="cosine", total_steps=10, decay_fraction=bad)
