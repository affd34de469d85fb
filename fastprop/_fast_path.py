"""partial_fit's fast path: the common call on a fitted model, without scikit-learn's
generic machinery.

A fitted model's ``partial_fit`` on a float array and known labels is the call a
training loop makes thousands of times, and ``validate_data`` plus ``LabelBinarizer``
cost more than a small epoch. The fast path returns the same result for exactly the
inputs it recognises, and leaves everything else to scikit-learn's path, with its exact
conversions, errors and warnings:

- ``_checked_fast``: (X, y) as ``validate_data(reset=False)`` would return them, or None;
- ``_encode_known_labels``: the one-hot targets for labels of the fitted classes;
- the deferred X check: with ``defer_x_check``, X's values (NaN, infinity) are not
  summed here: the shuffled epoch checks every row as it gathers it
  (``Trainer.run_epoch(check_finite=True)``), and the flag ``x_pending`` carries that
  promise from validation to the epoch. Where the epoch cannot keep it (the call fails
  before its epoch, or X is cast to the model's dtype first), ``_raise_if_x_nonfinite``
  makes the check there, so the error is scikit-learn's either way, and ``_fit``'s
  ``CallSnapshot`` leaves the model as it was.
"""

import numpy as np
from sklearn.utils.validation import validate_data

__all__ = ["PartialFitFastPathMixin"]


class PartialFitFastPathMixin:
    """The fast path's checks; the estimators' ``_validate_input`` calls them."""

    def _checked_fast(self, X, y, defer_x_check=False):
        """(X, y) unchanged when they are what ``validate_data(reset=False)`` would
        return as is: a contiguous float32/float64 ndarray X of the fitted width, with
        no feature names on either side, finite values (its sum is finite: one pass,
        scikit-learn's own fast test; skipped with ``defer_x_check``), and a plain
        ndarray y of matching length with finite floats or integer, bool or string
        labels. None for anything else, which takes scikit-learn's path, with its
        exact conversions, errors and warnings."""
        if (
            type(X) is not np.ndarray
            or type(y) is not np.ndarray
            or X.ndim != 2
            or X.dtype.type not in (np.float32, np.float64)
            or not (X.flags.c_contiguous or X.flags.f_contiguous)
            or X.shape[0] < 1
            or X.shape[1] != getattr(self, "n_features_in_", -1)
            or hasattr(self, "feature_names_in_")
            or y.ndim not in (1, 2)
            or y.shape[0] != X.shape[0]
            or (y.ndim == 2 and y.shape[1] < 1)
        ):
            return None
        with np.errstate(over="ignore", invalid="ignore"):
            if y.dtype.kind == "f":
                if not np.isfinite(y.sum()):
                    return None
            elif self._y_numeric or y.dtype.kind not in "iubU":
                return None
            if not defer_x_check and not np.isfinite(X.sum()):
                return None
        return X, y

    def _raise_if_x_nonfinite(self, X, y):
        """The check ``defer_x_check`` skipped, where the epoch cannot make it (the call
        failed before its epoch, or X is cast first): scikit-learn's own error when X
        has NaN or infinity, nothing when its values are finite."""
        if type(X) is np.ndarray and X.dtype.kind == "f":
            with np.errstate(over="ignore", invalid="ignore"):
                if np.isfinite(X.sum()):
                    return
            validate_data(
                self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                y_numeric=self._y_numeric, dtype=(np.float64, np.float32), reset=False,
            )

    def _encode_known_labels(self, y):
        """One-hot (or single-column, for binary) bool targets for 1-D integer or
        string labels of the fitted classes_; None where scikit-learn's general path
        must decide (other label types, multilabel, or labels outside classes_, for
        its exact error)."""
        classes = self.classes_
        lb = self._label_binarizer
        if (
            y.ndim != 1
            or y.dtype != classes.dtype
            or y.dtype.kind not in "iubU"
            or lb.y_type_ not in ("binary", "multiclass")
            or lb.sparse_output
            or lb.neg_label != 0
            or lb.pos_label != 1
        ):
            return None
        idx = np.searchsorted(classes, y)
        np.minimum(idx, len(classes) - 1, out=idx)
        if not np.array_equal(classes[idx], y):
            return None
        if lb.y_type_ == "binary":
            if len(classes) == 1:
                return None
            return (idx == 1).reshape(-1, 1)
        Y = np.zeros((y.shape[0], len(classes)), dtype=bool)
        Y[np.arange(y.shape[0]), idx] = True
        return Y
