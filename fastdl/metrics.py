"""Binary classification metrics: precision, recall, F1 (positive class = 1).

Labels and predictions are arrays of 0/1 (or bools) of the same shape; anything else is
a ValueError. Where a ratio is 0/0 (no predicted positives for precision, no actual
positives for recall, P + R = 0 for F1) the result is defined as 0.0, as scikit-learn's
``zero_division=0``. Results are Python floats.
"""

import numpy as np

from . import _checks


def _counts(y_true, y_pred):
    """(true positives, false positives, false negatives) of validated binary arrays."""
    y_true = _checks.as_float_array("y_true", y_true)
    y_pred = _checks.as_float_array("y_pred", y_pred)
    _checks.check_same_shape("y_true", y_true, "y_pred", y_pred)
    _checks.check_binary_labels("y_true", y_true)
    _checks.check_binary_labels("y_pred", y_pred)
    true = y_true == 1
    pred = y_pred == 1
    return (int(np.count_nonzero(true & pred)), int(np.count_nonzero(~true & pred)),
            int(np.count_nonzero(true & ~pred)))


def _ratio(numerator, denominator):
    return numerator / denominator if denominator else 0.0


def precision(y_true, y_pred):
    """TP / (TP + FP): the fraction of predicted positives that are positive."""
    tp, fp, _ = _counts(y_true, y_pred)
    return _ratio(tp, tp + fp)


def recall(y_true, y_pred):
    """TP / (TP + FN): the fraction of actual positives that are found."""
    tp, _, fn = _counts(y_true, y_pred)
    return _ratio(tp, tp + fn)


def f1_score(y_true, y_pred):
    """2 P R / (P + R), the harmonic mean of precision and recall (0 when P + R = 0)."""
    tp, fp, fn = _counts(y_true, y_pred)
    p, r = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return _ratio(2 * p * r, p + r)
