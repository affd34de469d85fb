"""scikit-learn names that are not public API, in one place.

fastprop follows scikit-learn's estimator conventions closely, and some of the tools
for that live in private modules, which any scikit-learn release may change without a
deprecation. Every such name fastprop uses is imported here and nowhere else, each with
a fallback, so that a change in scikit-learn is met in this one file. Small helpers are
fastprop's own code here instead, written as scikit-learn's behave.

Supported: the scikit-learn versions ``pyproject.toml`` allows; CI runs the estimator
tests on the oldest of them and on the newest.
"""

import functools
import numbers
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.multiclass import unique_labels

__all__ = [
    "AdamOptimizer",
    "Interval",
    "InvalidParameterError",
    "Options",
    "SGDOptimizer",
    "StrOptions",
    "check_optimize_result",
    "check_partial_fit_first_call",
    "check_sample_weight",
    "fit_context",
    "lbfgs_iprint_options",
]

# -- parameter validation: the constraint types of ``_parameter_constraints`` -------------
# (scikit-learn >= 1.2; the estimators' whole parameter validation rests on them)
from sklearn.utils._param_validation import (  # noqa: E402
    Interval,
    InvalidParameterError,
    Options,
    StrOptions,
)

# -- the optimizers of scikit-learn's MLPs: what their fitted models hold as
#    ``_optimizer`` (to_sklearn / from_sklearn carry the optimizer state across) -------
from sklearn.neural_network._stochastic_optimizers import (  # noqa: E402
    AdamOptimizer,
    SGDOptimizer,
)

# -- fit_context: parameter validation once per fit, nested validation skipped --------
try:
    from sklearn.base import _fit_context as fit_context
except ImportError:  # pragma: no cover - scikit-learn without it

    def fit_context(prefer_skip_nested_validation):
        """``sklearn.base._fit_context``'s contract: validate the estimator's
        parameters, then run the fit method."""

        def decorator(fit_method):
            @functools.wraps(fit_method)
            def wrapper(estimator, *args, **kwargs):
                estimator._validate_params()
                return fit_method(estimator, *args, **kwargs)

            return wrapper

        return decorator


# -- sample weights ----------------------------------------------------------------------
try:
    from sklearn.utils.validation import _check_sample_weight as _sk_check_sample_weight
except ImportError:  # pragma: no cover - scikit-learn without it
    _sk_check_sample_weight = None


def check_sample_weight(sample_weight, X, dtype=None):
    """Sample weights as a C-contiguous 1-D float array of X's length (scikit-learn's
    own check and messages where it has one)."""
    if _sk_check_sample_weight is not None:
        return _sk_check_sample_weight(sample_weight, X, dtype=dtype)
    n_samples = X.shape[0]
    if isinstance(sample_weight, numbers.Number):
        return np.full(n_samples, sample_weight, dtype=dtype or np.float64)
    sample_weight = np.ascontiguousarray(sample_weight, dtype=dtype or np.float64)
    if sample_weight.ndim != 1:
        raise ValueError(
            f"Sample weights must be 1D array or scalar, got {sample_weight.ndim}D array."
        )
    if sample_weight.shape != (n_samples,):
        raise ValueError(
            f"sample_weight.shape == {sample_weight.shape}, expected {(n_samples,)}!"
        )
    if not np.isfinite(sample_weight).all():
        raise ValueError("Input sample_weight contains NaN or infinity.")
    return sample_weight


# -- L-BFGS's print level: scipy >= 1.15 dropped ``iprint``, and scikit-learn passes it
#    only to the scipy versions that take it -------------------------------------------
try:
    from sklearn.utils.fixes import _get_additional_lbfgs_options_dict
except ImportError:  # pragma: no cover - scikit-learn without it
    _get_additional_lbfgs_options_dict = None


def lbfgs_iprint_options(iprint):
    """The ``options`` entries that set L-BFGS-B's print level for this scipy."""
    if _get_additional_lbfgs_options_dict is not None:
        return _get_additional_lbfgs_options_dict("iprint", iprint)
    import scipy

    major, minor = (int(part) for part in scipy.__version__.split(".")[:2])
    return {} if (major, minor) >= (1, 15) else {"iprint": iprint}


# -- small helpers, fastprop's own code --------------------------------------------------

def check_partial_fit_first_call(clf, classes=None):
    """True on a classifier's first ``partial_fit`` (which then sets ``classes_`` from
    ``classes``); a ValueError when ``classes`` is missing then, or differs from the
    fitted ``classes_`` later. scikit-learn's rule and messages."""
    if getattr(clf, "classes_", None) is None and classes is None:
        raise ValueError("classes must be passed on the first call to partial_fit.")
    if classes is not None:
        if getattr(clf, "classes_", None) is not None:
            if not np.array_equal(clf.classes_, unique_labels(classes)):
                raise ValueError(
                    "`classes=%r` is not the same as on last call to partial_fit, "
                    "was: %r" % (classes, clf.classes_)
                )
        else:
            clf.classes_ = unique_labels(classes)
            return True
    return False


def check_optimize_result(result, max_iter):
    """L-BFGS-B's iteration count, capped at ``max_iter``; a ConvergenceWarning with
    scipy's message when it did not converge. scikit-learn's rule and message."""
    n_iter = min(result.nit, max_iter)
    if result.status != 0:
        message = (
            f"lbfgs failed to converge after {n_iter} iteration(s) "
            f"(status={result.status}):\n{result.message}\n"
        )
        if n_iter == max_iter:
            message += (
                "\nIncrease the number of iterations to improve the convergence "
                f"(max_iter={max_iter})."
            )
        message += (
            "\nYou might also want to scale the data as shown in:\n"
            "    https://scikit-learn.org/stable/modules/preprocessing.html"
        )
        warnings.warn(message, ConvergenceWarning, stacklevel=3)
    return n_iter
