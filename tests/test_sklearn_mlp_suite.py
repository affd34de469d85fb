"""scikit-learn's own MLP tests, run on fastprop.

The installed scikit-learn ships ``sklearn/neural_network/tests/test_mlp.py``. This
module reads it, swaps its one import of the estimators for fastprop's, and runs its
tests as its own: fastprop's estimators pass scikit-learn's tests of its MLPs, except
the few that call scikit-learn's private methods, listed in ``EXCLUDED`` with the
reason. ``test_excluded_tests_fail_only_on_private_names`` keeps that list honest: each
excluded test must still fail, and only for the private name it names.
"""

import pathlib

import pytest
import sklearn

_SOURCE = pathlib.Path(sklearn.__file__).parent / "neural_network" / "tests" / "test_mlp.py"
_IMPORT = "from sklearn.neural_network import MLPClassifier, MLPRegressor"

# test name -> (the private name it reaches for, the reason it is left out)
EXCLUDED = {
    "test_gradient": (
        "_loss_grad_lbfgs",
        "calls scikit-learn's private MLPClassifier._loss_grad_lbfgs; fastprop's "
        "gradients are fastprop.core.loss_and_gradients, checked against finite "
        "differences in test_core_maths.py",
    ),
}


@pytest.fixture
def global_random_seed():
    """scikit-learn's conftest fixture of the same name, at its default seed."""
    return 42


def _load():
    source = _SOURCE.read_text()
    if source.count(_IMPORT) != 1:
        raise RuntimeError(f"{_SOURCE} no longer imports the estimators as {_IMPORT!r}")
    source = source.replace(_IMPORT, "from fastprop import MLPClassifier, MLPRegressor")
    namespace = {"__name__": __name__, "__file__": str(_SOURCE)}
    exec(compile(source, f"{_SOURCE} (on fastprop)", "exec"), namespace)
    return namespace


_SUITE = _load()
_EXCLUDED_FUNCTIONS = {name: _SUITE.pop(name) for name in EXCLUDED if name in _SUITE}
for _name, _value in _SUITE.items():
    if _name.startswith("test_") and _name not in globals():
        globals()[_name] = _value


def test_the_suite_was_found_and_runs_here():
    names = [name for name in _SUITE if name.startswith("test_")]
    assert len(names) >= 30, names
    assert _SUITE["MLPClassifier"].__module__.startswith("fastprop")


@pytest.mark.parametrize("name", sorted(_EXCLUDED_FUNCTIONS))
def test_excluded_tests_fail_only_on_private_names(name):
    private, _reason = EXCLUDED[name]
    with pytest.raises(AttributeError, match=private):
        _EXCLUDED_FUNCTIONS[name]()
