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


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks([MLPClassifier(max_iter=100), MLPRegressor(max_iter=100),
                          MLPClassifier(max_iter=100, activation="gelu"),
                          MLPRegressor(max_iter=100, activation="leaky_relu")])
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
