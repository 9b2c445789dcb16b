"""Optimizers: SGD, Momentum, RMSprop, Adam (classes) and the exams' drop-in ``optim_adam``.

The classes keep per-parameter state under each parameter's name and update a dict of
named arrays IN PLACE::

    opt = fastdl.optim.Adam(lr=1e-3)
    for batch in batches:
        grads = backprop(params, batch)       # {"W1": dW1, "b1": db1, ...}
        opt.step(params, grads)               # params["W1"] etc. are updated in place

Every parameter must be a writable float32/float64 ndarray; its dtype is kept (a float64
gradient of a float32 parameter is cast to float32) and state arrays use the same dtype.
``grads`` must hold a gradient, of the parameter's shape, for every name in ``params``
(extra names in ``grads`` are ignored). Everything is validated before any parameter
changes, so a bad call leaves params and state untouched.
"""

import numpy as np

from . import _checks


class Optimizer:
    """Base class: validation and per-name state; subclasses implement ``_update``."""

    def __init__(self, lr):
        self.lr = _checks.check_nonnegative("lr", lr)
        self.state = {}  # name -> dict of state arrays / counters

    def step(self, params, grads):
        """Update every array of ``params`` (a dict name -> array) in place, using
        ``grads`` (a dict name -> gradient of the same shape). Returns ``params``."""
        checked = _checks.check_gradients_cover(params, grads)
        for name, param in params.items():
            _checks.writable_float_array(f"params[{name!r}]", param)
        for name, param in params.items():
            grad = checked[name].astype(param.dtype, copy=False)
            self._update(param, grad, self.state.setdefault(name, {}))
        return params

    def _update(self, param, grad, state):  # pragma: no cover - abstract
        raise NotImplementedError


def _rate(name, value):
    """A decay rate in [0, 1)."""
    return _checks.check_fraction(name, value, high_open=True)


class SGD(Optimizer):
    """Plain gradient descent: w <- w - lr * g."""

    def __init__(self, lr=0.01):
        super().__init__(lr)

    def _update(self, param, grad, state):
        param -= param.dtype.type(self.lr) * grad


class Momentum(Optimizer):
    """Gradient descent with momentum, the exams' exponential-average form:
    V <- beta V + (1 - beta) g ;  w <- w - lr V   (V starts at 0).

    This equals PyTorch's ``SGD(lr=lr * (1 - beta), momentum=beta)`` (whose buffer is
    V / (1 - beta)).
    """

    def __init__(self, lr=0.01, beta=0.9):
        super().__init__(lr)
        self.beta = _rate("beta", beta)

    def _update(self, param, grad, state):
        velocity = state.setdefault("velocity", np.zeros_like(param))
        velocity *= param.dtype.type(self.beta)
        velocity += param.dtype.type(1 - self.beta) * grad
        param -= param.dtype.type(self.lr) * velocity


class RMSprop(Optimizer):
    """RMSprop: S <- beta S + (1 - beta) g**2 ;  w <- w - lr g / (sqrt(S) + eps).

    Same update as ``torch.optim.RMSprop(lr, alpha=beta, eps)`` (non-centered, no
    momentum); the default beta 0.9 is Hinton's (PyTorch's default alpha is 0.99).
    """

    def __init__(self, lr=1e-3, beta=0.9, eps=1e-8):
        super().__init__(lr)
        self.beta = _rate("beta", beta)
        self.eps = _checks.check_nonnegative("eps", eps)

    def _update(self, param, grad, state):
        t = param.dtype.type
        square_avg = state.setdefault("square_avg", np.zeros_like(param))
        square_avg *= t(self.beta)
        square_avg += t(1 - self.beta) * np.square(grad)
        param -= t(self.lr) * grad / (np.sqrt(square_avg) + t(self.eps))


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with bias correction, eps outside the square root:
    m <- b1 m + (1 - b1) g ; v <- b2 v + (1 - b2) g**2 ;
    w <- w - lr * (m / (1 - b1**t)) / (sqrt(v / (1 - b2**t)) + eps),
    t counted per parameter from 1. Same update as ``torch.optim.Adam``. For the exams'
    variant (eps inside the square root, dict-of-caches signature) see ``optim_adam``.
    """

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        super().__init__(lr)
        self.beta1 = _rate("beta1", beta1)
        self.beta2 = _rate("beta2", beta2)
        self.eps = _checks.check_nonnegative("eps", eps)

    def _update(self, param, grad, state):
        t = param.dtype.type
        m = state.setdefault("m", np.zeros_like(param))
        v = state.setdefault("v", np.zeros_like(param))
        state["step"] = step = state.get("step", 0) + 1
        m *= t(self.beta1)
        m += t(1 - self.beta1) * grad
        v *= t(self.beta2)
        v += t(1 - self.beta2) * np.square(grad)
        m_hat = m / t(1 - self.beta1 ** step)
        v_hat = v / t(1 - self.beta2 ** step)
        param -= t(self.lr) * m_hat / (np.sqrt(v_hat) + t(self.eps))


def optim_adam(weights_dict, gradients_dict, cache_dict, step, *, lr=1e-3, beta1=0.9,
               beta2=0.999, eps=1e-8):
    """The exams' Adam step, exactly (a drop-in for their ``optim_adam``)::

        V <- b1 V + (1 - b1) g ;  S <- b2 S + (1 - b2) g**2
        Vc = V / (1 - b1**step) ;  Sc = S / (1 - b2**step)
        W <- W - lr * Vc / sqrt(Sc + eps)          # eps INSIDE the square root

    For every name in ``weights_dict``: the gradient is ``gradients_dict[name]`` (same
    name, same shape; a missing one is a ValueError), the moments are
    ``cache_dict['v' + name]`` and ``cache_dict['s' + name]`` (a missing entry starts as
    zeros in the gradient's dtype). ``step`` is the 1-based step count t.

    Returns ``weights_dict``, updated: each weight that is a writable float ndarray of
    the result's dtype is overwritten in place (so references to it see the new values),
    any other entry (a list, an int or read-only array, a float32 weight with a float64
    gradient) is replaced by a new array; ``cache_dict`` is updated the same way. So both
    ``optim_adam(w, g, c, t)`` and ``w = optim_adam(w, g, c, t)`` work. The arithmetic is
    the exam's expression, operation for operation, so the results are bit-identical to
    it (NumPy's type promotion included). Nothing is written before every gradient has
    been validated.
    """
    step = _checks.as_int("step", step, minimum=1)
    lr = _checks.check_nonnegative("lr", lr)
    beta1 = _rate("beta1", beta1)
    beta2 = _rate("beta2", beta2)
    eps = _checks.check_nonnegative("eps", eps)
    if not isinstance(cache_dict, dict):
        raise TypeError(f"cache_dict: expected a dict, got {type(cache_dict).__name__}")
    grads = _checks.check_gradients_cover(weights_dict, gradients_dict,
                                          "weights_dict", "gradients_dict")
    weights = {name: _checks.as_float_array(f"weights_dict[{name!r}]", w)
               for name, w in weights_dict.items()}
    moments = {}
    for name, grad in grads.items():
        for key in ("v" + name, "s" + name):
            if key in cache_dict:
                moment = _checks.as_float_array(f"cache_dict[{key!r}]", cache_dict[key])
                if moment.shape != grad.shape:
                    raise ValueError(f"cache_dict[{key!r}]: expected shape {grad.shape} (the "
                                     f"shape of weights_dict[{name!r}]), got {moment.shape}")
            else:
                moment = np.zeros_like(grad)
            moments[key] = moment

    for name, grad in grads.items():
        v = beta1 * moments["v" + name] + (1 - beta1) * grad
        s = beta2 * moments["s" + name] + (1 - beta2) * grad ** 2
        v_corr = v / (1 - beta1 ** step)
        s_corr = s / (1 - beta2 ** step)
        new_weight = weights[name] - lr * v_corr / np.sqrt(s_corr + eps)
        _store(cache_dict, "v" + name, v)
        _store(cache_dict, "s" + name, s)
        _store(weights_dict, name, new_weight)
    return weights_dict


def _store(mapping, key, value):
    """Write ``value`` into mapping[key] in place when the old entry can take it
    (a writable ndarray of the same shape and dtype), else rebind the key."""
    old = mapping.get(key)
    if (isinstance(old, np.ndarray) and old.flags.writeable and old.shape == value.shape
            and old.dtype == value.dtype):
        old[...] = value
    else:
        mapping[key] = value
