"""The exams' startup-funding setting, end to end with fastdl, on synthetic data.

Each startup is described by 300 features; the label says whether it got funded. We
compare logistic regression (300 -> 1) with a network of one hidden layer of 80 ReLU
units and a sigmoid output (300 -> 80 -> 1): forward passes, BCE costs, parameter counts,
and one optimizer step with the exams' drop-in ``optim_adam`` and with ``optim.Adam``.

Run: python examples/startup_funding.py
"""

import numpy as np

import fastdl
from fastdl import losses, optim, params

N_FEATURES, N_HIDDEN, N_STARTUPS = 300, 80, 1000


def synthetic_startups(rng):
    """Features X (N, 300) and funded labels y (N,) drawn from a hidden logistic model."""
    x = rng.standard_normal((N_STARTUPS, N_FEATURES))
    true_w = rng.standard_normal(N_FEATURES) / np.sqrt(N_FEATURES) * 3
    y = (rng.random(N_STARTUPS) < fastdl.sigmoid(x @ true_w - 0.5)).astype(np.float64)
    return x, y


def network_forward(x, weights):
    """300 -> 80 (ReLU) -> 1 (sigmoid); returns the probabilities and the hidden layer."""
    z1 = fastdl.dense(x, weights["W1"], weights["b1"])
    a1 = fastdl.relu(z1)
    p = fastdl.sigmoid(fastdl.dense(a1, weights["W2"], weights["b2"]))[:, 0]
    return p, z1, a1


def network_gradients(x, y, weights):
    """Backpropagation of the mean BCE cost (sigmoid + BCE: dCost/dz2 = (p - y) / N)."""
    p, z1, a1 = network_forward(x, weights)
    dz2 = ((p - y) / len(y))[:, np.newaxis]
    dz1 = (dz2 @ weights["W2"].T) * (z1 > 0)
    return {"W2": a1.T @ dz2, "b2": dz2.sum(axis=0), "W1": x.T @ dz1, "b1": dz1.sum(axis=0)}


def main():
    rng = np.random.default_rng(0)
    x, y = synthetic_startups(rng)
    print(f"{N_STARTUPS} startups, {N_FEATURES} features, {y.mean():.0%} funded")

    # logistic regression: p = sigmoid(x @ w + b)
    w, b = rng.standard_normal((N_FEATURES, 1)) * 0.01, np.zeros(1)
    p_logistic = fastdl.sigmoid(fastdl.dense(x, w, b))[:, 0]
    cost_logistic = losses.binary_cross_entropy(y, p_logistic)
    n_logistic = params.dense(N_FEATURES, 1)
    assert n_logistic == w.size + b.size
    print(f"logistic regression: {n_logistic} parameters, BCE cost {cost_logistic:.4f}")

    # the 300 -> 80 -> 1 network (He initialisation for the ReLU layer)
    weights = {
        "W1": rng.standard_normal((N_FEATURES, N_HIDDEN)) * np.sqrt(2 / N_FEATURES),
        "b1": np.zeros(N_HIDDEN),
        "W2": rng.standard_normal((N_HIDDEN, 1)) * np.sqrt(1 / N_HIDDEN),
        "b2": np.zeros(1),
    }
    n_network = params.dense(N_FEATURES, N_HIDDEN) + params.dense(N_HIDDEN, 1)
    assert n_network == sum(a.size for a in weights.values())
    p_network, _, _ = network_forward(x, weights)
    cost_before = losses.binary_cross_entropy(y, p_network)
    print(f"300-80-1 network:    {n_network} parameters, BCE cost {cost_before:.4f}")

    # one step of the exams' Adam (eps inside the square root; cache keys 'v'/'s' + name)
    grads = network_gradients(x, y, weights)
    exam_weights = {name: a.copy() for name, a in weights.items()}
    cache = {}
    fastdl.optim_adam(exam_weights, grads, cache, 1)
    cost_exam = losses.binary_cross_entropy(y, network_forward(x, exam_weights)[0])

    # the same step with the library's Adam (Kingma & Ba, eps outside the square root)
    adam_weights = {name: a.copy() for name, a in weights.items()}
    optim.Adam(lr=1e-3).step(adam_weights, grads)
    cost_adam = losses.binary_cross_entropy(y, network_forward(x, adam_weights)[0])

    largest = max(float(np.max(np.abs(exam_weights[n] - adam_weights[n]))) for n in weights)
    print(f"after one step: optim_adam cost {cost_exam:.4f}, Adam cost {cost_adam:.4f} "
          f"(largest weight difference {largest:.1e})")
    assert cost_exam < cost_before and cost_adam < cost_before


if __name__ == "__main__":
    main()
