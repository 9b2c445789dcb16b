"""fastdl.losses against element-by-element formulas (Python's math) and PyTorch (float64)."""

import math
import warnings

import numpy as np
import pytest

from fastdl import losses
from helpers import assert_close, assert_rejected_in_subprocess, layout_variants


def _mean(values):
    return sum(values) / len(values)


def _bce_terms(y, y_hat):
    return [-(t * math.log(p) + (1 - t) * math.log(1 - p))
            for t, p in zip(np.ravel(y).tolist(), np.ravel(y_hat).tolist())]


def _probabilities(rng, shape, dtype):
    return rng.uniform(0.01, 0.99, shape).astype(dtype)


# ---------------------------------------------------------------------------------------
# binary cross-entropy and MSE


def test_bce_formula_reductions(rng, dtype):
    y = rng.integers(0, 2, 20)
    y_hat = _probabilities(rng, 20, dtype)
    terms = _bce_terms(y, y_hat.astype(np.float64))
    assert_close(losses.binary_cross_entropy(y, y_hat), _mean(terms), dtype)
    assert_close(losses.binary_cross_entropy(y, y_hat, reduction="sum"), sum(terms), dtype)
    assert_close(losses.binary_cross_entropy(y, y_hat, reduction="none"), terms, dtype)


def test_bce_vs_torch_including_zero_and_one(rng, torch):
    y = rng.uniform(0, 1, (6, 3))  # soft targets too
    y_hat = rng.uniform(0, 1, (6, 3))
    y_hat[0, 0], y_hat[1, 1], y_hat[2, 2] = 0.0, 1.0, 1e-50
    y[0, 0], y[1, 1] = 1.0, 0.0  # confidently wrong: PyTorch clamps the log at -100 too
    for reduction in ("mean", "sum", "none"):
        expected = torch.nn.functional.binary_cross_entropy(
            torch.from_numpy(y_hat), torch.from_numpy(y), reduction=reduction).numpy()
        assert_close(losses.binary_cross_entropy(y, y_hat, reduction=reduction), expected,
                     np.float64)


def test_bce_log_zero_guarded():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = losses.binary_cross_entropy([1, 0, 1, 0], [0.0, 1.0, 1.0, 0.0], reduction="none")
    assert np.array_equal(out, [100.0, 100.0, 0.0, 0.0])


def test_bce_layouts_unchanged(rng):
    y = rng.integers(0, 2, (5, 4)).astype(np.float64)
    y_hat = _probabilities(rng, (5, 4), np.float64)
    expected = _mean(_bce_terms(y, y_hat))
    for name, variant in layout_variants(y_hat):
        before = variant.copy()
        assert_close(losses.binary_cross_entropy(y, variant), expected, np.float64), name
        assert np.array_equal(before, variant)


def test_bce_nan_propagates():
    assert np.isnan(losses.binary_cross_entropy([1.0, 0.0], [np.nan, 0.5]))


def test_mse_formula_and_torch(rng, dtype, torch):
    y = rng.standard_normal((7, 2)).astype(dtype)
    y_hat = rng.standard_normal((7, 2)).astype(dtype)
    terms = [(float(a) - float(b)) ** 2 for a, b in zip(y_hat.ravel(), y.ravel())]
    assert_close(losses.mse(y, y_hat), _mean(terms), dtype)
    assert_close(losses.mse(y, y_hat, reduction="sum"), sum(terms), dtype)
    y64, y_hat64 = y.astype(np.float64), y_hat.astype(np.float64)
    expected = torch.nn.functional.mse_loss(torch.from_numpy(y_hat64), torch.from_numpy(y64))
    assert_close(losses.mse(y64, y_hat64), float(expected), np.float64)


def test_integer_labels_keep_float32():
    y_hat = np.array([0.2, 0.9], np.float32)
    assert losses.binary_cross_entropy(np.array([0, 1]), y_hat).dtype == np.float32
    assert losses.binary_cross_entropy([False, True], y_hat).dtype == np.float32
    assert losses.binary_cross_entropy(np.array([0.0, 1.0]), y_hat).dtype == np.float64
    assert losses.mse(np.array([1, 2]), y_hat, reduction="none").dtype == np.float32


@pytest.mark.parametrize("func", [losses.binary_cross_entropy, losses.mse])
def test_shape_mismatch_names_both_shapes(func):
    with pytest.raises(ValueError, match=r"y \(3,\) and y_hat \(3, 1\)"):
        func(np.zeros(3), np.full((3, 1), 0.5))


@pytest.mark.parametrize("y, y_hat, name", [
    ([0, 1], [0.5, 1.2], "y_hat"), ([0, 1], [-0.1, 0.5], "y_hat"), ([0, 2], [0.5, 0.5], "y"),
])
def test_bce_rejects_non_probabilities(y, y_hat, name):
    with pytest.raises(ValueError, match=f"{name}: expected probabilities"):
        losses.binary_cross_entropy(y, y_hat)


def test_bad_reduction():
    with pytest.raises(ValueError, match="reduction"):
        losses.mse([1.0], [1.0], reduction="avg")


# ---------------------------------------------------------------------------------------
# cross-entropy


def _ce_terms(labels_onehot, logits):
    out = []
    for t_row, z_row in zip(labels_onehot.tolist(), logits.tolist()):
        log_sum = math.log(sum(math.exp(z) for z in z_row))
        out.append(-sum(t * (z - log_sum) for t, z in zip(t_row, z_row)))
    return out


def test_cross_entropy_indices_and_onehot(rng, dtype):
    logits = (rng.standard_normal((8, 5)) * 3).astype(dtype)
    labels = rng.integers(0, 5, 8)
    onehot = np.eye(5, dtype=int)[labels]
    terms = _ce_terms(onehot, logits.astype(np.float64))
    assert_close(losses.cross_entropy(labels, logits), _mean(terms), dtype)
    assert_close(losses.cross_entropy(onehot, logits), _mean(terms), dtype)
    assert_close(losses.cross_entropy(labels, logits, reduction="none"), terms, dtype)
    assert_close(losses.cross_entropy(labels.astype(float), logits.astype(np.float64),
                                      reduction="sum"), sum(terms), np.float64)
    assert_close(losses.cross_entropy(labels[0], logits[0]), terms[0], dtype)


def test_cross_entropy_vs_torch(rng, torch):
    logits = rng.standard_normal((10, 4)) * 4
    labels = rng.integers(0, 4, 10)
    probs = rng.dirichlet(np.ones(4), 10)
    t_logits = torch.from_numpy(logits)
    for reduction in ("mean", "sum", "none"):
        expected = torch.nn.functional.cross_entropy(t_logits, torch.from_numpy(labels),
                                                     reduction=reduction).numpy()
        assert_close(losses.cross_entropy(labels, logits, reduction=reduction), expected,
                     np.float64)
        expected = torch.nn.functional.cross_entropy(t_logits, torch.from_numpy(probs),
                                                     reduction=reduction).numpy()
        assert_close(losses.cross_entropy(probs, logits, reduction=reduction), expected,
                     np.float64)


def test_cross_entropy_huge_logits(dtype):
    logits = np.array([[1e4, 0.0, -1e4], [3e4, 3e4, 0.0]], dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = losses.cross_entropy([1, 0], logits, reduction="none")
    assert_close(out, [1e4, math.log(2)], dtype)


@pytest.mark.parametrize("labels, error, match", [
    ([0, 3], ValueError, r"\[0, 3\)"),
    ([-1, 0], ValueError, r"\[0, 3\)"),
    ([0.5, 1.0], ValueError, "whole numbers"),
    ([[0, 1]], ValueError, r"labels \(1, 2\) and logits \(2, 3\)"),
    ([True, False], TypeError, "integer"),
])
def test_cross_entropy_bad_labels(labels, error, match):
    with pytest.raises(error, match=match):
        losses.cross_entropy(np.array(labels), np.zeros((2, 3)))


# ---------------------------------------------------------------------------------------
# multi-task, GAN, WGAN


def test_multitask_loss(rng, dtype):
    y_class = rng.integers(0, 2, 6)
    p_class = _probabilities(rng, 6, dtype)
    y_reg = rng.standard_normal((6, 2)).astype(dtype)
    y_reg_hat = rng.standard_normal((6, 2)).astype(dtype)
    bce = _bce_terms(y_class, p_class.astype(np.float64))
    sq = [_mean([(float(a) - float(b)) ** 2 for a, b in zip(r1, r2)])
          for r1, r2 in zip(y_reg_hat, y_reg)]
    per_example = [b + 0.5 * s for b, s in zip(bce, sq)]
    got = losses.multitask_loss(y_class, p_class, y_reg, y_reg_hat, weight=0.5)
    assert_close(got, _mean(per_example), dtype)
    assert_close(losses.multitask_loss(y_class, p_class, y_reg, y_reg_hat, 0.5, "none"),
                 per_example, dtype)
    assert_close(losses.multitask_loss(y_class, p_class, y_reg, y_reg_hat, 0.5, "sum"),
                 sum(per_example), dtype)


def test_multitask_mismatched_examples():
    with pytest.raises(ValueError, match="same number of examples"):
        losses.multitask_loss([0, 1], [0.5, 0.5], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="weight"):
        losses.multitask_loss([0], [0.5], [1.0], [1.0], weight=-1)


def test_gan_losses(rng, dtype):
    d_real = _probabilities(rng, 5, dtype)
    d_fake = _probabilities(rng, 7, dtype)  # batches of different sizes
    real = [float(v) for v in d_real]
    fake = [float(v) for v in d_fake]
    expected = _mean([-math.log(v) for v in real]) + _mean([-math.log(1 - v) for v in fake])
    assert_close(losses.gan_discriminator_loss(d_real, d_fake), expected, dtype)
    assert_close(losses.gan_generator_loss(d_fake), _mean([-math.log(v) for v in fake]), dtype)
    assert_close(losses.gan_generator_loss(d_fake, saturating=True),
                 _mean([math.log(1 - v) for v in fake]), dtype)
    assert_close(losses.gan_discriminator_loss(d_real, d_fake[:5], reduction="none"),
                 [-math.log(r) - math.log(1 - f) for r, f in zip(real, fake)], dtype)


def test_gan_discriminator_is_bce_of_real_ones_fake_zeros(rng, torch):
    d_real, d_fake = rng.uniform(0, 1, 9), rng.uniform(0, 1, 4)
    bce = torch.nn.functional.binary_cross_entropy
    expected = (bce(torch.from_numpy(d_real), torch.ones(9, dtype=torch.float64))
                + bce(torch.from_numpy(d_fake), torch.zeros(4, dtype=torch.float64)))
    assert_close(losses.gan_discriminator_loss(d_real, d_fake), float(expected), np.float64)


def test_gan_rejects_non_probabilities():
    with pytest.raises(ValueError, match="d_fake: expected probabilities"):
        losses.gan_generator_loss([1.5])
    with pytest.raises(ValueError, match=r"d_real \(2,\) and d_fake \(3,\)"):
        losses.gan_discriminator_loss([0.5, 0.5], [0.5] * 3, reduction="none")
    with pytest.raises(TypeError, match="saturating"):
        losses.gan_generator_loss([0.5], saturating="yes")


def test_wgan_losses(rng, dtype):
    d_real = (rng.standard_normal(6) * 3).astype(dtype)
    d_fake = (rng.standard_normal(4) * 3).astype(dtype)
    expected = _mean([float(v) for v in d_fake]) - _mean([float(v) for v in d_real])
    assert_close(losses.wgan_critic_loss(d_real, d_fake), expected, dtype)
    assert_close(losses.wgan_generator_loss(d_fake), -_mean([float(v) for v in d_fake]), dtype)
    assert_close(losses.wgan_critic_loss(d_real[:4], d_fake, reduction="none"),
                 d_fake.astype(np.float64) - d_real[:4], dtype)


def test_bad_input_never_crashes():
    assert_rejected_in_subprocess(
        'import numpy as np; from fastdl import losses',
        ['losses.cross_entropy(np.array([10**12]), np.zeros((1, 3)))',
         'losses.cross_entropy(np.array([-5]), np.zeros((1, 3)))',
         'losses.binary_cross_entropy(np.zeros(3), np.zeros((3, 1)))',
         'losses.cross_entropy(np.zeros(0), np.zeros((0, 0)))'])
