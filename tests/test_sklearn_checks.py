"""scikit-learn's estimator API checks on fastprop's estimators.

scikit-learn declares no expected failures for its own MLPClassifier / MLPRegressor
(``sklearn.utils._test_common.instance_generator.PER_ESTIMATOR_XFAIL_CHECKS`` has no
entry for them), so a drop-in replacement must pass every check as well: none is
marked expected-to-fail here. ``max_iter=100`` keeps the checks fast, as scikit-learn's
own test configuration does for its MLPs; the resulting ConvergenceWarnings are the
only warnings silenced.
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


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks([MLPClassifier(max_iter=100), MLPRegressor(max_iter=100),
                          *CALLBACK_ESTIMATORS])
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
