"""scikit-learn's estimator API checks on fastprop's estimators.

scikit-learn declares no expected failures for its own MLPClassifier / MLPRegressor
(``sklearn.utils._test_common.instance_generator.PER_ESTIMATOR_XFAIL_CHECKS`` has no
entry for them), so a drop-in replacement must pass every check as well: at
scikit-learn's parameters none is marked expected-to-fail here. The options
scikit-learn's MLPs lack are checked at non-default values too; the expected
failures are partial_fit with class_weight='balanced', refused as SGDClassifier does,
and, with dropout, the sample-weight equivalence checks: dropout breaks that equivalence
by design (see below). ``max_iter=100`` keeps the checks fast, as scikit-learn's own test configuration does
for its MLPs; the resulting ConvergenceWarnings are the only warnings silenced.
"""

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from fastprop import MLPClassifier, MLPRegressor

try:  # scikit-learn >= 1.9: the estimators carrying its callbacks pass the checks too
    from sklearn.callback import ScoringMonitor

    CALLBACK_ESTIMATORS = [
        MLPClassifier(max_iter=100, n_iter_no_change=5).set_callbacks(
            ScoringMonitor(scoring="accuracy")),
        MLPRegressor(max_iter=100, solver="lbfgs").set_callbacks(
            ScoringMonitor(scoring="r2")),
    ]
except ImportError:
    CALLBACK_ESTIMATORS = []


# Dropout draws one mask for a row of weight 2 and two independent masks for the same
# row repeated, so the two fits differ by design (scikit-learn itself runs this check on
# its MLPs only with solver='lbfgs', or sgd with a coarse tol, which dropout is not for).
_WEIGHTS_VS_REPEATS = ("a sample's weight and its repetitions draw different dropout "
                       "masks")
_DROPOUT_XFAIL = {
    "check_sample_weight_equivalence_on_dense_data": _WEIGHTS_VS_REPEATS,
    "check_sample_weight_equivalence_on_sparse_data": _WEIGHTS_VS_REPEATS,
}


def _expected_failures(estimator):
    if getattr(estimator, "dropout", 0.0) != 0.0:
        return _DROPOUT_XFAIL
    if getattr(estimator, "class_weight", None) == "balanced":
        # as SGDClassifier: one call's labels do not give the classes' frequencies
        why = "partial_fit refuses class_weight='balanced', as SGDClassifier does"
        return {"check_fit_score_takes_y": why,
                "check_n_features_in_after_fitting": why,
                "check_estimators_partial_fit_n_features": why}
    return {}


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks([
    MLPClassifier(max_iter=100),
    MLPRegressor(max_iter=100),
    # the training options scikit-learn's MLPs do not have, at non-default values
    MLPClassifier(max_iter=100, class_weight="balanced", max_grad_norm=1.0),
    MLPClassifier(max_iter=100, scoring="loss"),
    MLPRegressor(max_iter=100, max_grad_norm=1.0, scoring="neg_mean_squared_error"),
    MLPClassifier(max_iter=100, solver="rmsprop", rho=0.8),
    MLPRegressor(max_iter=100, solver="rmsprop", rho=0.8),
    MLPClassifier(max_iter=100, solver="adamw"),
    MLPRegressor(max_iter=100, solver="adamw"),
    MLPRegressor(loss="huber", huber_delta=0.5, max_iter=100),
    MLPRegressor(loss="absolute_error", max_iter=100),
    MLPClassifier(max_iter=100, dropout=0.2),
    MLPRegressor(max_iter=100, hidden_layer_sizes=(20, 10), dropout=(0.2, 0.1)),
    MLPClassifier(max_iter=100, activation="gelu"),
    MLPRegressor(max_iter=100, activation="leaky_relu"),
    *CALLBACK_ESTIMATORS,
], expected_failed_checks=_expected_failures)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
