"""Losses of the exams: BCE, MSE, cross-entropy, multi-task, GAN and WGAN (plain NumPy).

Conventions shared by every loss here:

- ``reduction="mean"`` (default) averages the per-element losses, ``"sum"`` adds them,
  ``"none"`` returns them unreduced. For the usual one-output-per-example arrays ((N,)
  or (N, 1)) "mean" is the mean over examples; for (N, K) arrays it averages over all
  N*K entries, as PyTorch does. ``cross_entropy`` has one loss per example.
- Targets and predictions must have exactly the same shape (an (N,) target against (N, 1)
  predictions is an error, not an (N, N) broadcast).
- Integer/bool targets (0/1 labels, one-hot rows) take the predictions' dtype, so float32
  predictions give a float32 loss; float targets follow ``np.result_type``.
- log(0) guard: every log of a probability is clipped below at ``LOG_CLIP = -100``, the
  value PyTorch's ``BCELoss`` uses. So a confident wrong prediction (y_hat exactly 0 or
  1) costs 100 instead of inf, and 0 * log(0) terms are 0, never NaN; for probabilities
  above e**-100 (about 3.7e-44) nothing changes.
- Probabilities (BCE predictions and targets, the GAN discriminator's outputs) outside
  [0, 1] raise ValueError; NaN propagates.
"""

import numpy as np

from . import _checks

LOG_CLIP = -100.0


def _reduce(losses, reduction):
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum(dtype=losses.dtype)
    if losses.size == 0:
        return losses.dtype.type(np.nan)
    return losses.mean(dtype=losses.dtype)


def _clipped_log(p):
    """log(p) clipped below at LOG_CLIP; log(0) = -inf is clipped without a warning."""
    with np.errstate(divide="ignore"):
        return np.maximum(np.log(p), LOG_CLIP)


def _clipped_log1m(p):
    """log(1 - p) clipped below at LOG_CLIP (log1p: accurate for small p)."""
    with np.errstate(divide="ignore"):
        return np.maximum(np.log1p(-p), LOG_CLIP)


def _predictions_and_targets(y_name, y, pred_name, y_pred):
    """(targets, predictions) as float arrays of one dtype and one shape."""
    y_pred = _checks.as_float_array(pred_name, y_pred)
    y = _checks.as_target_array(y_name, y, y_pred.dtype)
    _checks.check_same_shape(y_name, y, pred_name, y_pred)
    dtype = _checks.common_dtype(y, y_pred)
    return y.astype(dtype, copy=False), y_pred.astype(dtype, copy=False)


def binary_cross_entropy(y, y_hat, reduction="mean"):
    """-[y log(y_hat) + (1 - y) log(1 - y_hat)] per element, then reduced.

    y: labels (0/1, or soft targets in [0, 1]); y_hat: predicted probabilities in [0, 1]
    (a sigmoid output, not logits). Logs are clipped at LOG_CLIP (module docstring).
    """
    reduction = _checks.check_reduction(reduction)
    y, y_hat = _predictions_and_targets("y", y, "y_hat", y_hat)
    _checks.check_probabilities("y", y)
    _checks.check_probabilities("y_hat", y_hat)
    losses = -(y * _clipped_log(y_hat) + (1 - y) * _clipped_log1m(y_hat))
    return _reduce(losses, reduction)


def mse(y, y_hat, reduction="mean"):
    """Squared error (y_hat - y)**2 per element, then reduced (mean squared error)."""
    reduction = _checks.check_reduction(reduction)
    y, y_hat = _predictions_and_targets("y", y, "y_hat", y_hat)
    return _reduce(np.square(y_hat - y), reduction)


def log_softmax(logits, axis=-1):
    """log(softmax(logits)) via log-sum-exp: logits - max - log(sum(exp(logits - max)))."""
    logits = _checks.as_float_array("logits", logits)
    shifted = logits - np.max(logits, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def cross_entropy(labels, logits, reduction="mean"):
    """Softmax cross-entropy from logits (classes on the last axis), one loss per example.

    logits: (N, K) (or (K,) for one example). labels: either class indices of shape
    logits.shape[:-1] (integers in [0, K); float arrays holding whole numbers are
    accepted), or one-hot / class-probability rows of the same shape as logits. Computed
    as -sum_k t_k * log_softmax(logits)_k with a stable log-sum-exp, so huge logits do
    not overflow. Matches ``torch.nn.functional.cross_entropy``.
    """
    reduction = _checks.check_reduction(reduction)
    logits = _checks.as_float_array("logits", logits)
    if logits.ndim == 0 or logits.shape[-1] == 0:
        raise ValueError(f"logits: expected (N, K) with K >= 1 classes on the last axis, "
                         f"got shape {logits.shape}")
    labels_array = np.asarray(labels) if not isinstance(labels, np.ndarray) else labels
    num_classes = logits.shape[-1]
    log_p = log_softmax(logits)
    if labels_array.shape == logits.shape:
        targets = _checks.as_target_array("labels", labels_array, logits.dtype)
        _checks.check_probabilities("labels", targets)
        targets = targets.astype(_checks.common_dtype(targets, logits), copy=False)
        losses = -np.sum(targets * log_p, axis=-1)
    elif labels_array.shape == logits.shape[:-1]:
        indices = _class_indices(labels_array, num_classes)
        losses = -np.take_along_axis(log_p, indices[..., np.newaxis], axis=-1)[..., 0]
    else:
        raise ValueError(f"labels and logits: labels must be class indices of shape "
                         f"{logits.shape[:-1]} or one-hot rows of shape {logits.shape}, got "
                         f"labels {labels_array.shape} and logits {logits.shape}")
    return _reduce(losses, reduction)


def _class_indices(labels, num_classes):
    """Integer class indices in [0, num_classes), validated (they index an array)."""
    kind = labels.dtype.kind
    if kind == "f":
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise ValueError("labels: class indices must be whole numbers, got non-integer values")
    elif kind not in "iu":
        raise TypeError(f"labels: expected integer class indices, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels: class indices must be in [0, {num_classes}) for "
                         f"{num_classes} classes, got values in [{labels.min()}, {labels.max()}]")
    return labels.astype(np.intp)


def multitask_loss(y_class, p_class, y_reg, y_reg_hat, weight=1.0, reduction="mean"):
    """Multi-task cost: BCE on the classification head + ``weight`` * MSE on the
    regression head, e.g. J = BCE(y_class, p_class) + weight * MSE(y_reg, y_reg_hat).

    y_class, p_class: labels and predicted probabilities, shape (N,) or (N, K1);
    y_reg, y_reg_hat: targets and predictions of the regression head, (N,) or (N, K2).
    Both heads must describe the same N examples. Each example's loss is the mean BCE
    over its class outputs plus ``weight`` times the mean squared error over its
    regression outputs; "none" returns these N per-example losses, "mean" averages them
    (= mean BCE + weight * mean MSE), "sum" adds them. ``weight`` >= 0.
    """
    reduction = _checks.check_reduction(reduction)
    weight = _checks.check_nonnegative("weight", weight)
    bce = binary_cross_entropy(y_class, p_class, reduction="none")
    sq = mse(y_reg, y_reg_hat, reduction="none")
    if bce.ndim == 0 or sq.ndim == 0 or bce.shape[0] != sq.shape[0]:
        raise ValueError(f"y_class and y_reg: both heads need the same number of examples "
                         f"on axis 0, got y_class {bce.shape} and y_reg {sq.shape}")
    dtype = _checks.common_dtype(bce, sq)
    per_example = (_per_example_mean(bce).astype(dtype, copy=False)
                   + dtype.type(weight) * _per_example_mean(sq).astype(dtype, copy=False))
    return _reduce(per_example, reduction)


def _per_example_mean(losses):
    return losses.reshape(losses.shape[0], -1).mean(axis=1) if losses.ndim > 1 else losses


def _discriminator_outputs(name, value):
    array = _checks.as_float_array(name, value)
    _checks.check_probabilities(name, array)
    return array


def _two_sided(real_name, real_losses, fake_name, fake_losses, reduction):
    """Combine a loss over real examples with one over generated ones: each side is
    averaged (or summed) over its own batch, so the batches may differ in size; "none"
    needs equal shapes and adds them elementwise."""
    if reduction == "none":
        _checks.check_same_shape(real_name, real_losses, fake_name, fake_losses)
        return real_losses + fake_losses
    dtype = _checks.common_dtype(real_losses, fake_losses)
    return dtype.type(_reduce(real_losses, reduction) + _reduce(fake_losses, reduction))


def gan_discriminator_loss(d_real, d_fake, reduction="mean"):
    """Discriminator loss -[log D(x) + log(1 - D(G(z)))], to be minimised:
    mean(-log d_real) + mean(-log(1 - d_fake)) = BCE(1, d_real) + BCE(0, d_fake).

    d_real, d_fake: the discriminator's probabilities on a real and a generated batch
    (the batches may differ in size unless reduction="none").
    """
    reduction = _checks.check_reduction(reduction)
    d_real = _discriminator_outputs("d_real", d_real)
    d_fake = _discriminator_outputs("d_fake", d_fake)
    return _two_sided("d_real", -_clipped_log(d_real), "d_fake", -_clipped_log1m(d_fake),
                      reduction)


def gan_generator_loss(d_fake, saturating=False, reduction="mean"):
    """Generator loss, to be minimised.

    saturating=False (default, the non-saturating loss used in practice): -log D(G(z)).
    saturating=True (the original minimax form): log(1 - D(G(z))); its gradient vanishes
    when the discriminator confidently rejects the fakes (D(G(z)) near 0), hence the name.
    """
    reduction = _checks.check_reduction(reduction)
    if not isinstance(saturating, (bool, np.bool_)):
        raise TypeError(f"saturating: expected a bool, got {type(saturating).__name__}")
    d_fake = _discriminator_outputs("d_fake", d_fake)
    losses = _clipped_log1m(d_fake) if saturating else -_clipped_log(d_fake)
    return _reduce(losses, reduction)


def wgan_critic_loss(d_real, d_fake, reduction="mean"):
    """WGAN critic loss, to be minimised: mean(D(G(z))) - mean(D(x)) (the critic maximises
    mean(D(x)) - mean(D(G(z))), the Wasserstein estimate). d_real, d_fake: unbounded
    critic scores (no sigmoid)."""
    reduction = _checks.check_reduction(reduction)
    d_real = _checks.as_float_array("d_real", d_real)
    d_fake = _checks.as_float_array("d_fake", d_fake)
    return _two_sided("d_real", -d_real, "d_fake", d_fake, reduction)


def wgan_generator_loss(d_fake, reduction="mean"):
    """WGAN generator loss, to be minimised: -mean(D(G(z)))."""
    reduction = _checks.check_reduction(reduction)
    return _reduce(-_checks.as_float_array("d_fake", d_fake), reduction)
