"""fastdl.optim: update rules vs plainly written formulas and vs torch.optim (float64);
optim_adam vs the exams' form written out in NumPy (bit-identical over 100 steps)."""

import math

import numpy as np
import pytest

import fastdl
from fastdl import optim
from helpers import assert_close, assert_rejected_in_subprocess

SHAPES = {"W1": (4, 3), "b1": (3,), "W2": (3, 1)}


def _params(rng, dtype=np.float64):
    return {name: rng.standard_normal(shape).astype(dtype) for name, shape in SHAPES.items()}


def _grad_sequence(seed, steps, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [{name: rng.standard_normal(shape).astype(dtype) for name, shape in SHAPES.items()}
            for _ in range(steps)]


# ---------------------------------------------------------------------------------------
# scalar-by-scalar formulas


def _run_scalar(rule, w0, grads):
    """Apply a scalar update rule (w, g, state, t) -> w to every element."""
    out = []
    for i, w in enumerate(w0.ravel().tolist()):
        state = {}
        for t, g in enumerate(grads, start=1):
            w = rule(w, float(g.ravel()[i]), state, t)
        out.append(w)
    return np.reshape(out, w0.shape)


def _sgd(lr):
    return lambda w, g, s, t: w - lr * g


def _momentum(lr, beta):
    def rule(w, g, s, t):
        s["v"] = beta * s.get("v", 0.0) + (1 - beta) * g
        return w - lr * s["v"]
    return rule


def _rmsprop(lr, beta, eps):
    def rule(w, g, s, t):
        s["s"] = beta * s.get("s", 0.0) + (1 - beta) * g * g
        return w - lr * g / (math.sqrt(s["s"]) + eps)
    return rule


def _adam(lr, b1, b2, eps):
    def rule(w, g, s, t):
        s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
        s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g * g
        return w - lr * (s["m"] / (1 - b1 ** t)) / (math.sqrt(s["v"] / (1 - b2 ** t)) + eps)
    return rule


@pytest.mark.parametrize("make, rule", [
    (lambda: optim.SGD(lr=0.1), _sgd(0.1)),
    (lambda: optim.Momentum(lr=0.1, beta=0.9), _momentum(0.1, 0.9)),
    (lambda: optim.RMSprop(lr=0.01, beta=0.9, eps=1e-8), _rmsprop(0.01, 0.9, 1e-8)),
    (lambda: optim.Adam(lr=0.01), _adam(0.01, 0.9, 0.999, 1e-8)),
], ids=["sgd", "momentum", "rmsprop", "adam"])
def test_optimizers_match_scalar_formulas(make, rule, rng, dtype):
    params = _params(rng, dtype)
    start = {name: p.astype(np.float64) for name, p in params.items()}
    grads = _grad_sequence(1, 5, dtype)
    ids = {name: id(p) for name, p in params.items()}
    opt = make()
    for g in grads:
        assert opt.step(params, g) is params
    assert {name: id(p) for name, p in params.items()} == ids  # updated in place
    for name in SHAPES:
        expected = _run_scalar(rule, start[name], [g[name] for g in grads])
        # float32: errors of a few ulps of each update accumulate over the steps
        assert_close(params[name], expected, dtype, scale_tol=2e-4 if dtype == np.float32 else None)


# ---------------------------------------------------------------------------------------
# torch.optim in float64


def _torch_run(torch, make_torch_opt, start, grads):
    tensors = {name: torch.tensor(p, requires_grad=True) for name, p in start.items()}
    opt = make_torch_opt(list(tensors.values()))
    for g in grads:
        for name, t in tensors.items():
            t.grad = torch.from_numpy(g[name])
        opt.step()
    return {name: t.detach().numpy() for name, t in tensors.items()}


@pytest.mark.parametrize("ours, theirs", [
    (lambda: optim.SGD(lr=0.05), lambda torch, p: torch.optim.SGD(p, lr=0.05)),
    # the exams' momentum V = beta V + (1 - beta) g is torch's buffer times (1 - beta)
    (lambda: optim.Momentum(lr=0.05, beta=0.8),
     lambda torch, p: torch.optim.SGD(p, lr=0.05 * (1 - 0.8), momentum=0.8)),
    (lambda: optim.RMSprop(lr=0.01, beta=0.95, eps=1e-6),
     lambda torch, p: torch.optim.RMSprop(p, lr=0.01, alpha=0.95, eps=1e-6)),
    (lambda: optim.Adam(lr=0.02, beta1=0.8, beta2=0.99, eps=1e-7),
     lambda torch, p: torch.optim.Adam(p, lr=0.02, betas=(0.8, 0.99), eps=1e-7)),
], ids=["sgd", "momentum", "rmsprop", "adam"])
def test_optimizers_vs_torch(ours, theirs, rng, torch):
    params = _params(rng)
    start = {name: p.copy() for name, p in params.items()}
    grads = _grad_sequence(2, 30)
    opt = ours()
    for g in grads:
        opt.step(params, g)
    expected = _torch_run(torch, lambda p: theirs(torch, p), start, grads)
    for name in SHAPES:
        assert_close(params[name], expected[name], np.float64, scale_tol=1e-10)


def test_float32_params_stay_float32(rng):
    params = _params(rng, np.float32)
    grads = _grad_sequence(3, 1)[0]  # float64 gradients
    for opt in (optim.SGD(), optim.Momentum(), optim.RMSprop(), optim.Adam()):
        opt.step(params, grads)
        assert all(p.dtype == np.float32 for p in params.values())
        assert all(s.dtype == np.float32 for st in opt.state.values() for s in st.values()
                   if isinstance(s, np.ndarray))


def test_step_validation_leaves_params_untouched(rng):
    params = _params(rng)
    before = {name: p.copy() for name, p in params.items()}
    grads = _grad_sequence(4, 1)[0]
    del grads["b1"]
    with pytest.raises(ValueError, match=r"no gradient for parameter\(s\) \['b1'\]"):
        optim.Adam().step(params, grads)
    grads["b1"] = np.zeros(4)
    with pytest.raises(ValueError, match=r"grads\['b1'\]: expected shape \(3,\).*got \(4,\)"):
        optim.SGD().step(params, grads)
    for name in SHAPES:
        assert np.array_equal(params[name], before[name])
    with pytest.raises(TypeError, match="params"):
        optim.SGD().step({"w": [1.0, 2.0]}, {"w": [1.0, 1.0]})


@pytest.mark.parametrize("make, match", [
    (lambda: optim.SGD(lr=-0.1), "lr"),
    (lambda: optim.Adam(eps=-1e-8), "eps"),
    (lambda: optim.Adam(beta1=1.0), "beta1"),
    (lambda: optim.Momentum(beta=-0.1), "beta"),
    (lambda: optim.RMSprop(lr=float("nan")), "lr"),
])
def test_bad_hyperparameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# ---------------------------------------------------------------------------------------
# the exams' drop-in optim_adam


def _exam_adam(weights, grads, cache, step, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
    """The exams' reference form, written out plainly (cache initialised by the caller)."""
    for name in weights:
        cache["v" + name] = b1 * cache["v" + name] + (1 - b1) * grads[name]
        cache["s" + name] = b2 * cache["s" + name] + (1 - b2) * grads[name] ** 2
        v_corr = cache["v" + name] / (1 - b1 ** step)
        s_corr = cache["s" + name] / (1 - b2 ** step)
        weights[name] = weights[name] - lr * v_corr / np.sqrt(s_corr + eps)
    return weights


def test_optim_adam_identical_to_exam_form_100_steps(rng, dtype):
    weights = _params(rng, dtype)
    reference = {name: w.copy() for name, w in weights.items()}
    ref_cache = {p + name: np.zeros(shape, dtype) for name, shape in SHAPES.items() for p in "vs"}
    cache = {}  # missing entries start at zeros
    ids = {name: id(w) for name, w in weights.items()}
    for step, grads in enumerate(_grad_sequence(5, 100, dtype), start=1):
        returned = fastdl.optim_adam(weights, grads, cache, step)
        reference = _exam_adam(reference, grads, ref_cache, step)
        assert returned is weights
    assert {name: id(w) for name, w in weights.items()} == ids  # updated in place
    for name in SHAPES:
        assert weights[name].dtype == dtype
        assert np.array_equal(weights[name], reference[name])
        assert np.array_equal(cache["v" + name], ref_cache["v" + name])
        assert np.array_equal(cache["s" + name], ref_cache["s" + name])


def test_optim_adam_eps_inside_sqrt_differs_from_adam():
    # with a zero gradient the exam form divides by sqrt(eps), never by zero
    w = {"w": np.array([1.0])}
    fastdl.optim_adam(w, {"w": np.array([0.0])}, {}, 1)
    assert w["w"][0] == 1.0
    # one step from zero moments: Adam moves by lr*g/(|g|+eps), the exam form by
    # lr*g/sqrt(g**2+eps); for g = 1e-4 these differ visibly
    g = 1e-4
    exam = {"w": np.array([0.0])}
    fastdl.optim_adam(exam, {"w": np.array([g])}, {}, 1)
    adam = {"w": np.array([0.0])}
    optim.Adam().step(adam, {"w": np.array([g])})
    assert math.isclose(exam["w"][0], -1e-3 * g / math.sqrt(g * g + 1e-8), rel_tol=1e-12)
    assert math.isclose(adam["w"][0], -1e-3 * g / (g + 1e-8), rel_tol=1e-12)


def test_optim_adam_replaces_non_array_entries():
    weights = {"w": [1.0, 2.0]}
    readonly = np.array([1.0, 2.0])
    readonly.setflags(write=False)
    weights["r"] = readonly
    out = fastdl.optim_adam(weights, {"w": [0.5, -0.5], "r": [1.0, 1.0]}, {}, 1)
    assert isinstance(out["w"], np.ndarray) and out["r"] is not readonly
    assert np.array_equal(readonly, [1.0, 2.0])
    assert_close(out["w"], [1 - 1e-3 * 0.5 / math.sqrt(0.25 + 1e-8),
                            2 + 1e-3 * 0.5 / math.sqrt(0.25 + 1e-8)], np.float64)


@pytest.mark.parametrize("args, error, match", [
    (({"w": np.ones(2)}, {}, {}, 1), ValueError, "gradients_dict: no gradient"),
    (({"w": np.ones(2)}, {"w": np.ones(3)}, {}, 1), ValueError, r"\(2,\).*\(3,\)"),
    (({"w": np.ones(2)}, {"w": np.ones(2)}, {}, 0), ValueError, "step"),
    (({"w": np.ones(2)}, {"w": np.ones(2)}, {}, 1.5), TypeError, "step"),
    (({"w": np.ones(2)}, {"w": np.ones(2)}, {"vw": np.ones(3)}, 1), ValueError, "vw"),
    (({"w": np.ones(2)}, {"w": np.ones(2)}, None, 1), TypeError, "cache_dict"),
])
def test_optim_adam_bad_input(args, error, match):
    with pytest.raises(error, match=match):
        fastdl.optim_adam(*args)


def test_bad_input_never_crashes():
    assert_rejected_in_subprocess(
        'import numpy as np, fastdl; from fastdl import optim',
        ['fastdl.optim_adam({"w": np.ones(2)}, {"w": "abc"}, {}, 1)',
         'optim.Adam().step({"w": np.ones(2)}, {"w": np.ones((2, 2))})',
         'optim.SGD().step({"w": np.ones(2, int)}, {"w": np.ones(2)})'])
