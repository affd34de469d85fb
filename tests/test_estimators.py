"""Tests of fastprop's estimators, MLPClassifier and MLPRegressor, mostly against
scikit-learn's estimators of the same names as the reference.

With the same hyperparameters and ``random_state``, fastprop draws scikit-learn's
Glorot initialisation and minibatch shuffles from the same random stream and follows the
same update rules, so a fastprop model and a scikit-learn model fitted on the same
float64 data differ only by floating-point rounding (a different summation order in
the compiled kernels and BLAS). Most tests below therefore compare with scikit-learn
run on the same problem, with the tolerances explained at ``PARITY``.

Everything here is self-contained (it does not use tests/helpers.py).
"""

import pickle
import re
import subprocess
import sys
import warnings

import joblib
import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose, assert_array_equal
from sklearn import neural_network as skn
from sklearn.base import clone
from sklearn.datasets import (
    load_breast_cancer,
    load_diabetes,
    load_digits,
    load_iris,
    make_multilabel_classification,
    make_regression,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import PoissonRegressor
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler, scale
from sklearn.utils._param_validation import InvalidParameterError

import fastprop
from fastprop import MLPClassifier, MLPEstimator, MLPRegressor

# A fit stopped by max_iter warns; most tests below stop by max_iter on purpose (a few
# epochs are enough to compare trajectories). Tests about the warning use pytest.warns,
# which records it regardless of this filter.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

SK = {MLPClassifier: skn.MLPClassifier, MLPRegressor: skn.MLPRegressor}

# -- tolerances ---------------------------------------------------------------------------
#
# PARITY: fastprop vs scikit-learn, float64, same data / hyperparameters / random_state,
# a few epochs (<= ~30) of a small network. Both compute the same float64 operations in
# a different order, so each step differs by O(1e-16) relative; observed differences
# after such fits are ~1e-14. rtol=1e-6 leaves ample room for growth of rounding over a
# few epochs (or L-BFGS steps) while any real algorithmic difference (a missing sample,
# a different bias correction or momentum variant, a learning rate off by one epoch, a
# different init or shuffle) changes results at the 1e-3 level or more. Parameters near
# zero are compared with an absolute tolerance relative to the largest parameter.
PARITY = dict(rtol=1e-6, atol_factor=1e-9)
# SAME_MATH: fastprop vs itself along two code paths that do the same arithmetic up to
# order (dense vs sparse kernels, memmap vs in-memory, weights vs repeated rows with
# one full batch): tighter, since no library boundary is crossed; still not bitwise
# (different summation order).
SAME_MATH = dict(rtol=1e-8, atol_factor=1e-11)
# float32 training vs the float64 / scikit-learn float32 trajectory over a few epochs:
# float32 rounding (~6e-8 relative per operation) accumulated over a few hundred updates.
F32 = dict(rtol=2e-3, atol_factor=2e-4)


def quiet_fit(est, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(*args, **kwargs)


# the option values only fastprop has, as scikit-learn's messages print them
FASTPROP_OPTIONS = {"'huber'", "'absolute_error'", "'rmsprop'", "'adamw'", "'leaky_relu'",
                    "'elu'", "'gelu'", "'softplus'", "'silu'"}


def sk_twin(est):
    """An unfitted scikit-learn estimator with the same parameters as ``est``."""
    sk = SK[type(est)]
    return sk(**{k: v for k, v in est.get_params().items() if k in sk().get_params()})


def layers(est):
    return list(est.coefs_) + list(est.intercepts_)


def assert_layers_close(got, expected, rtol, atol_factor, err_msg=""):
    got, expected = layers(got), layers(expected)
    assert len(got) == len(expected)
    scale_ = max(float(np.max(np.abs(a))) for a in expected)
    for i, (a, b) in enumerate(zip(got, expected)):
        assert a.shape == b.shape, (i, a.shape, b.shape)
        assert_allclose(a, b, rtol=rtol, atol=atol_factor * scale_,
                        err_msg=f"layer array {i} {err_msg}")


def assert_layers_equal(a, b):
    la, lb = layers(a), layers(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        assert x.dtype == y.dtype
        assert_array_equal(x, y)


def layers_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(layers(a), layers(b)))


def np_forward(est, X):
    """The network's output computed with NumPy from est.coefs_ / est.intercepts_."""
    A = np.asarray(X, dtype=np.float64)
    acts = {
        "identity": lambda z: z,
        "logistic": lambda z: 1 / (1 + np.exp(-z)),
        "tanh": np.tanh,
        "relu": lambda z: np.maximum(z, 0),
    }
    n = len(est.coefs_)
    for i, (W, b) in enumerate(zip(est.coefs_, est.intercepts_)):
        A = A @ np.asarray(W, np.float64) + np.asarray(b, np.float64)
        if i < n - 1:
            A = acts[est.activation](A)
    out = est.out_activation_
    if out == "softmax":
        A = np.exp(A - A.max(axis=1, keepdims=True))
        return A / A.sum(axis=1, keepdims=True)
    if out == "exp":
        return np.exp(A)
    return acts[out](A)


# -- small data sets (module level: built once) ------------------------------------------

_iris = load_iris()
X_IRIS = scale(_iris.data)
Y_IRIS = _iris.target

_digits = load_digits()
X_DIGITS = _digits.data[:400] / 16.0
Y_DIGITS = _digits.target[:400]

X_REG, Y_REG = make_regression(n_samples=120, n_features=6, noise=5.0, random_state=0)
Y_REG = scale(Y_REG)

X_ML, Y_ML = make_multilabel_classification(
    n_samples=120, n_features=8, n_classes=4, random_state=0
)
X_ML = scale(X_ML)

X_MO, Y_MO = make_regression(n_samples=120, n_features=6, n_targets=3, noise=5.0,
                             random_state=1)
Y_MO = scale(Y_MO)


def data_for(Est, kind="default"):
    if Est is MLPClassifier:
        if kind == "binary":
            return X_IRIS, (Y_IRIS == 1).astype(int)
        if kind == "multilabel":
            return X_ML, Y_ML
        return X_IRIS, Y_IRIS
    if kind == "multioutput":
        return X_MO, Y_MO
    return X_REG, Y_REG


# =========================================================================================
# 2. held-out scores vs scikit-learn on standard data sets
# =========================================================================================


def _score_problem(name):
    """(Estimator, X, y, hyperparameters) of one comparison."""
    if name == "digits":
        X, y = load_digits(return_X_y=True)
        return MLPClassifier, X / 16.0, y, dict(hidden_layer_sizes=(32,), max_iter=30)
    if name == "iris":
        X, y = load_iris(return_X_y=True)
        return MLPClassifier, X, y, dict(hidden_layer_sizes=(10,), max_iter=200,
                                         learning_rate_init=0.01)
    if name == "breast_cancer":
        X, y = load_breast_cancer(return_X_y=True)
        return MLPClassifier, X, y, dict(hidden_layer_sizes=(16,), max_iter=60)
    if name == "diabetes":
        X, y = load_diabetes(return_X_y=True)
        # y scaled too: with raw targets (~150 +- 77) Adam at lr 1e-2 needs thousands of
        # epochs; the comparison is about equal training, not about this data set.
        return MLPRegressor, X, scale(y), dict(hidden_layer_sizes=(16,), max_iter=150,
                                                learning_rate_init=0.01, alpha=1.0)
    if name == "multilabel":
        X, Y = make_multilabel_classification(n_samples=300, n_features=20, n_classes=5,
                                              random_state=0)
        return MLPClassifier, X, Y, dict(hidden_layer_sizes=(20,), max_iter=150,
                                         learning_rate_init=0.01)
    if name == "multioutput":
        X, Y = make_regression(n_samples=300, n_features=10, n_targets=3, noise=10.0,
                               random_state=0)
        return MLPRegressor, X, scale(Y), dict(hidden_layer_sizes=(20,), max_iter=150,
                                               learning_rate_init=0.01)
    raise ValueError(name)


# Held-out score tolerance. With the same random_state the two fits follow the same
# trajectory to rounding, so the scores are normally identical; the tolerance only
# absorbs a prediction flipped by rounding at a decision boundary, or (L-BFGS on the
# multi-output regression, whose loss scikit-learn reports as the mean over outputs while
# following the gradient of their sum, see fastprop._mlp's docstring) a slightly
# different line search. 0.02 is ~2 of 75-450 held-out samples in accuracy, or 2% of R^2:
# far below what a wrong solver, init or loss would cost on these data sets.
SCORE_TOL = 0.02


@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
@pytest.mark.parametrize(
    "name", ["digits", "iris", "breast_cancer", "diabetes", "multilabel", "multioutput"]
)
def test_heldout_score_not_worse_than_sklearn(name, solver):
    Est, X, y, params = _score_problem(name)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25,
                                                        random_state=0)
    scaler = StandardScaler().fit(X_train)
    if name != "digits":  # digits is already in [0, 1]
        X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    est = Est(solver=solver, random_state=0, **params)
    ref = sk_twin(est)
    quiet_fit(est, X_train, y_train)
    quiet_fit(ref, X_train, y_train)
    score, ref_score = est.score(X_test, y_test), ref.score(X_test, y_test)
    assert score >= ref_score - SCORE_TOL, (score, ref_score)
    # and it is a sensible model, not two equally broken ones
    # (diabetes is hard for a small MLP: a linear model gets R^2 ~0.35 on this split;
    # multilabel accuracy is subset accuracy, all 5 labels right)
    floor = {"digits": 0.9, "iris": 0.85, "breast_cancer": 0.9, "diabetes": 0.1,
             "multilabel": 0.15, "multioutput": 0.8}[name]
    assert score > floor


# =========================================================================================
# 3. solvers and learning-rate schedules: trajectories vs scikit-learn
# =========================================================================================

STOCHASTIC_CONFIGS = [
    # (solver, learning_rate, momentum, nesterovs_momentum)
    ("adam", "constant", 0.9, True),
    # Adam ignores the schedule and momentum settings, in both libraries
    ("adam", "invscaling", 0.5, False),
    ("sgd", "constant", 0.9, True),
    ("sgd", "constant", 0.9, False),
    ("sgd", "constant", 0.0, False),
    ("sgd", "invscaling", 0.9, True),
    ("sgd", "invscaling", 0.9, False),
    ("sgd", "invscaling", 0.0, True),
    ("sgd", "adaptive", 0.9, True),
    ("sgd", "adaptive", 0.5, False),
]


@pytest.mark.parametrize("Est,kind", [(MLPClassifier, "default"), (MLPRegressor, "default")])
@pytest.mark.parametrize("solver,learning_rate,momentum,nesterov", STOCHASTIC_CONFIGS)
def test_stochastic_trajectory_matches_sklearn(Est, kind, solver, learning_rate,
                                               momentum, nesterov):
    X, y = data_for(Est, kind)
    est = Est(hidden_layer_sizes=(6, 4), activation="tanh", solver=solver,
              learning_rate=learning_rate, momentum=momentum,
              nesterovs_momentum=nesterov, learning_rate_init=0.05, power_t=0.4,
              batch_size=32, max_iter=8, alpha=1e-3, random_state=0)
    ref = sk_twin(est)
    est.fit(X, y)
    ref.fit(X, y)
    assert est.n_iter_ == ref.n_iter_ == 8
    assert est.t_ == ref.t_ == 8 * X.shape[0]
    assert_allclose(est.loss_curve_, ref.loss_curve_, rtol=PARITY["rtol"])
    assert_allclose(est.loss_, ref.loss_, rtol=PARITY["rtol"])
    assert_layers_close(est, ref, **PARITY)
    # SGD's current learning rate (schedules change it between epochs). scikit-learn's
    # Adam keeps its bias-corrected step there instead, not comparable.
    if solver == "sgd":
        assert_allclose(est._optimizer.learning_rate, ref._optimizer.learning_rate,
                        rtol=1e-12)


@pytest.mark.parametrize("activation", ["identity", "logistic", "tanh", "relu"])
@pytest.mark.parametrize("Est,kind", [(MLPClassifier, "default"), (MLPClassifier, "binary"),
                                      (MLPClassifier, "multilabel"),
                                      (MLPRegressor, "default")])
def test_activations_and_output_layers_match_sklearn(activation, Est, kind):
    X, y = data_for(Est, kind)
    est = Est(hidden_layer_sizes=(5,), activation=activation, max_iter=5, batch_size=40,
              learning_rate_init=0.02, random_state=1)
    ref = sk_twin(est)
    est.fit(X, y)
    ref.fit(X, y)
    assert est.out_activation_ == ref.out_activation_
    assert_allclose(est.loss_curve_, ref.loss_curve_, rtol=PARITY["rtol"])
    assert_layers_close(est, ref, **PARITY)
    proba = est.predict_proba(X) if Est is MLPClassifier else est.predict(X)
    ref_proba = ref.predict_proba(X) if Est is MLPClassifier else ref.predict(X)
    assert_allclose(proba, ref_proba, rtol=PARITY["rtol"], atol=1e-12)


@pytest.mark.parametrize("Est,kind", [(MLPClassifier, "default"), (MLPClassifier, "binary"),
                                      (MLPClassifier, "multilabel"),
                                      (MLPRegressor, "default")])
def test_lbfgs_matches_sklearn(Est, kind):
    X, y = data_for(Est, kind)
    est = Est(hidden_layer_sizes=(6,), solver="lbfgs", max_iter=25, alpha=1e-3,
              random_state=0)
    ref = sk_twin(est)
    est.fit(X, y)
    ref.fit(X, y)
    assert est.n_iter_ == ref.n_iter_
    assert_allclose(est.loss_, ref.loss_, rtol=PARITY["rtol"])
    assert_layers_close(est, ref, **PARITY)


def test_lbfgs_max_fun_matches_sklearn():
    # sklearn's test_lbfgs_classification_maxfun: max_fun caps function evaluations,
    # which warns, and the iteration count is what scikit-learn reaches.
    est = MLPClassifier(hidden_layer_sizes=(6,), solver="lbfgs", max_fun=8, max_iter=150,
                        random_state=0)
    ref = sk_twin(est)
    with pytest.warns(ConvergenceWarning):
        est.fit(X_IRIS, Y_IRIS)
    ref.fit(X_IRIS, Y_IRIS)
    assert est.n_iter_ == ref.n_iter_ < 150
    assert_allclose(est.loss_, ref.loss_, rtol=PARITY["rtol"])


def test_multioutput_squared_error_reports_sum_over_outputs():
    # Documented deliberate difference: for several outputs fastprop reports the sum over
    # outputs of half the MSE (the quantity whose gradient both libraries follow);
    # scikit-learn reports the mean over outputs. With alpha=0 the two reported losses
    # differ by exactly the factor n_outputs, and the weights are the same.
    est = MLPRegressor(hidden_layer_sizes=(5,), alpha=0.0, max_iter=5, batch_size=30,
                       random_state=0, tol=0.0)
    ref = sk_twin(est)
    est.fit(X_MO, Y_MO)
    ref.fit(X_MO, Y_MO)
    assert est.n_outputs_ == 3
    assert_allclose(est.loss_curve_, 3 * np.asarray(ref.loss_curve_), rtol=PARITY["rtol"])
    assert_layers_close(est, ref, **PARITY)


@pytest.mark.parametrize("kind", ["default", "binary"])
def test_saturated_log_loss_same_weights_exact_loss(kind):
    # A diverging SGD run saturates the output probabilities. scikit-learn's reported
    # log-loss clips probabilities to [eps, 1 - eps] (each sample's loss is capped at
    # -log(eps) ~ 36); fastprop reports the exact cross-entropy of its logits, which
    # grows without that cap. The gradients (and so the weights) are the same: only the
    # reported loss_curve_ differs, once predictions saturate.
    X, y = data_for(MLPClassifier, kind)
    est = MLPClassifier(hidden_layer_sizes=(5,), solver="sgd", learning_rate_init=5.0,
                        alpha=0.0, max_iter=3, batch_size=50, random_state=0)
    ref = sk_twin(est)
    est.fit(10 * X, y)
    ref.fit(10 * X, y)
    assert_layers_close(est, ref, **PARITY)
    cap = -np.log(np.finfo(np.float64).eps)
    assert max(ref.loss_curve_) <= cap + 1e-9
    assert max(est.loss_curve_) > cap
    assert (np.asarray(est.loss_curve_) >= np.asarray(ref.loss_curve_) * (1 - 1e-9)).all()


def test_training_loss_stopping_matches_sklearn():
    # n_iter_no_change / tol on the training loss: the run stops at the same epoch.
    est = MLPClassifier(hidden_layer_sizes=(8,), solver="sgd", learning_rate_init=0.05,
                        tol=1e-3, n_iter_no_change=3, max_iter=500, random_state=0)
    ref = sk_twin(est)
    est.fit(X_IRIS, Y_IRIS)
    ref.fit(X_IRIS, Y_IRIS)
    assert est.n_iter_ == ref.n_iter_ < 500
    assert est.best_loss_ == pytest.approx(ref.best_loss_, rel=PARITY["rtol"])
    assert est._no_improvement_count == ref._no_improvement_count == 4
    assert_allclose(est.loss_curve_, ref.loss_curve_, rtol=PARITY["rtol"])


def test_n_iter_no_change_inf_runs_to_max_iter():
    # sklearn's test_n_iter_no_change_inf
    est = MLPClassifier(hidden_layer_sizes=(4,), solver="sgd", tol=1e9,
                        n_iter_no_change=np.inf, max_iter=60, random_state=0)
    with pytest.warns(ConvergenceWarning, match="Maximum iterations"):
        est.fit(X_IRIS, Y_IRIS)
    assert est.n_iter_ == 60
    assert est._no_improvement_count == est.n_iter_ - 1


def test_adaptive_learning_rate_divides_by_five_like_sklearn(capsys):
    # sklearn's test_adaptive_learning_rate. With tol=0.5 no epoch after the first
    # improves the loss by tol, so every n_iter_no_change + 1 = 11 epochs the rate is
    # divided by 5: 1e-3 -> 2e-4 -> ... -> 3.2e-7 after 5 divisions; the 6th trigger
    # finds it <= 1e-6 and stops: n_iter_ = 1 + 6 * 11 = 67.
    X, y = [[3.0, 2.0], [1.0, 6.0]], [1, 0]
    est = MLPClassifier(tol=0.5, max_iter=3000, solver="sgd", learning_rate="adaptive",
                        random_state=0, verbose=True)
    ref = sk_twin(est)
    est.fit(X, y)
    out = capsys.readouterr().out
    ref.fit(X, y)
    capsys.readouterr()
    assert est.n_iter_ == ref.n_iter_ == 67
    assert est._optimizer.learning_rate == pytest.approx(1e-3 / 5**5, rel=1e-12)
    assert est._optimizer.learning_rate == pytest.approx(ref._optimizer.learning_rate,
                                                         rel=1e-12)
    assert est._optimizer.learning_rate < 1e-6
    assert_allclose(est.loss_curve_, ref.loss_curve_, rtol=PARITY["rtol"])
    assert_layers_close(est, ref, **PARITY)
    assert out.count("Setting learning rate to") == 5
    assert "Learning rate too small. Stopping." in out


def test_invscaling_rate_after_fit():
    est = MLPRegressor(hidden_layer_sizes=(4,), solver="sgd", learning_rate="invscaling",
                       learning_rate_init=0.1, power_t=0.3, max_iter=4, batch_size=40,
                       random_state=0).fit(X_REG, Y_REG)
    assert est.t_ == 4 * X_REG.shape[0]
    assert est._optimizer.learning_rate == pytest.approx(0.1 / (est.t_ + 1) ** 0.3,
                                                         rel=1e-12)


def test_shuffle_changes_training_and_is_reproducible():
    # sklearn's test_shuffle
    X, y = make_regression(n_samples=50, n_features=5, random_state=0)
    fits = {}
    for shuffle in (True, False):
        a, b = (MLPRegressor(hidden_layer_sizes=1, max_iter=1, batch_size=1,
                             random_state=0, shuffle=shuffle).fit(X, y) for _ in range(2))
        assert layers_equal(a, b)
        fits[shuffle] = a
    assert not np.array_equal(fits[True].coefs_[0], fits[False].coefs_[0])


def test_larger_alpha_shrinks_weights():
    # sklearn's test_alpha
    sums = []
    for alpha in (0.0, 1.0, 10.0):
        est = MLPClassifier(hidden_layer_sizes=10, alpha=alpha, max_iter=50,
                            random_state=1).fit(X_DIGITS[:100], Y_DIGITS[:100] % 2)
        sums.append([np.abs(W).sum() for W in est.coefs_])
    sums = np.array(sums)
    assert (sums[1:] < sums[:-1]).all()


def test_batch_size_larger_than_n_samples_warns_and_clips():
    est = MLPRegressor(hidden_layer_sizes=3, batch_size=1000, max_iter=2, random_state=0)
    with pytest.warns(UserWarning, match="It is going to be clipped"):
        est.fit(X_REG, Y_REG)
    ref = sk_twin(est)
    with pytest.warns(UserWarning, match="It is going to be clipped"):
        ref.fit(X_REG, Y_REG)
    assert_layers_close(est, ref, **PARITY)


@pytest.mark.parametrize("hidden", [(), [3], (5, 3), np.array([4, 2]), np.int64(4)])
@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_hidden_layer_sizes_forms_match_sklearn(hidden, solver):
    # hidden_layer_sizes=() is no hidden layer at all (a linear / logistic model)
    est = MLPClassifier(hidden_layer_sizes=hidden, solver=solver, max_iter=5,
                        random_state=0)
    ref = sk_twin(est)
    est.fit(X_IRIS, Y_IRIS)
    ref.fit(X_IRIS, Y_IRIS)
    assert est.n_layers_ == ref.n_layers_ == len(np.atleast_1d(hidden)) + 2
    assert [W.shape for W in est.coefs_] == [W.shape for W in ref.coefs_]
    assert_layers_close(est, ref, **PARITY)


def test_tolerance_stops_before_max_iter():
    # sklearn's test_tolerance
    est = MLPClassifier(tol=0.5, max_iter=3000, solver="sgd").fit([[3, 2], [1, 6]], [1, 0])
    assert est.n_iter_ < est.max_iter


def test_wide_network_blocked_full_data_passes_match_sklearn():
    # A network wide enough that the full-data passes (L-BFGS's loss and gradient, and
    # predict) run in several blocks of rows, and the hidden layer's elementwise pass is
    # large enough to be threaded: still scikit-learn's results.
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    est = MLPClassifier(hidden_layer_sizes=(1024,), solver="lbfgs", max_iter=3,
                        random_state=0)
    ref = sk_twin(est)
    est.fit(X, y)
    ref.fit(X, y)
    assert X.shape[0] * 1024 > 1 << 20  # more rows than one block holds
    assert_allclose(est.loss_, ref.loss_, rtol=PARITY["rtol"])
    assert_layers_close(est, ref, **PARITY)
    X_big = np.vstack([X, X])
    assert_allclose(est.predict_proba(X_big), np_forward(est, X_big), rtol=1e-9,
                    atol=1e-12)
    assert_allclose(est.predict_proba(X_big), ref.predict_proba(X_big), rtol=1e-6,
                    atol=1e-9)


@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
def test_batch_size_one_matches_sklearn(Est):
    X, y = data_for(Est)
    X, y = X[::3], y[::3]
    est = Est(hidden_layer_sizes=(4,), solver="sgd", batch_size=1, max_iter=3,
              learning_rate_init=0.01, random_state=0)
    ref = sk_twin(est)
    est.fit(X, y)
    ref.fit(X, y)
    assert_allclose(est.loss_curve_, ref.loss_curve_, rtol=PARITY["rtol"])
    assert_layers_close(est, ref, **PARITY)


def test_column_vector_y_warns_like_sklearn():
    from sklearn.exceptions import DataConversionWarning
    for Est, y in ((MLPClassifier, Y_IRIS), (MLPRegressor, Y_REG)):
        X = X_IRIS if Est is MLPClassifier else X_REG
        with pytest.warns(DataConversionWarning):
            est = Est(hidden_layer_sizes=(3,), max_iter=2, random_state=0).fit(
                X, y.reshape(-1, 1))
        assert_layers_equal(est, Est(**est.get_params()).fit(X, y))


# =========================================================================================
# 4. early stopping
# =========================================================================================


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
def test_early_stopping_matches_sklearn(Est, weighted, shuffle):
    if Est is MLPClassifier:
        X, y = X_DIGITS, Y_DIGITS
    else:
        X, y = X_DIGITS, scale(X_DIGITS @ np.linspace(-1, 1, 64))
    sw = np.random.RandomState(0).randint(1, 4, X.shape[0]).astype(float) if weighted else None
    est = Est(hidden_layer_sizes=(16,), early_stopping=True, validation_fraction=0.2,
              n_iter_no_change=3, learning_rate_init=0.01, max_iter=200, random_state=0,
              shuffle=shuffle)
    ref = sk_twin(est)
    est.fit(X, y, sample_weight=sw)
    ref.fit(X, y, sample_weight=sw)
    assert est.n_iter_ == ref.n_iter_ < 200
    assert len(est.validation_scores_) == est.n_iter_
    assert_allclose(est.validation_scores_, ref.validation_scores_, rtol=PARITY["rtol"])
    assert est.best_validation_score_ == pytest.approx(ref.best_validation_score_,
                                                       rel=PARITY["rtol"])
    assert est.best_validation_score_ == max(est.validation_scores_)
    assert est.best_loss_ is None and ref.best_loss_ is None
    assert_allclose(est.loss_curve_, ref.loss_curve_, rtol=PARITY["rtol"])
    # the restored best weights
    assert_layers_close(est, ref, **PARITY)


@pytest.mark.parametrize("case", ["adaptive_sgd", "multilabel"])
def test_early_stopping_variants_match_sklearn(case):
    # adaptive SGD divides its rate when the *validation* score stalls; multilabel
    # targets are split without stratification
    if case == "adaptive_sgd":
        X, y = X_DIGITS, Y_DIGITS
        params = dict(solver="sgd", learning_rate="adaptive", learning_rate_init=0.5,
                      n_iter_no_change=2, tol=1e-2, max_iter=60)
    else:
        X, y = X_ML, Y_ML
        params = dict(n_iter_no_change=3, learning_rate_init=0.02, max_iter=100)
    est = MLPClassifier(hidden_layer_sizes=(10,), early_stopping=True, random_state=0,
                        **params)
    ref = sk_twin(est)
    est.fit(X, y)
    ref.fit(X, y)
    assert est.n_iter_ == ref.n_iter_
    assert_allclose(est.validation_scores_, ref.validation_scores_, rtol=PARITY["rtol"])
    assert_allclose(est.loss_curve_, ref.loss_curve_, rtol=PARITY["rtol"])
    assert_layers_close(est, ref, **PARITY)
    if case == "adaptive_sgd":
        assert est._optimizer.learning_rate == pytest.approx(
            ref._optimizer.learning_rate, rel=1e-12)
        assert est._optimizer.learning_rate < 0.5  # it was divided


def test_early_stopping_restores_weights_of_best_epoch():
    # Independent of scikit-learn: the restored model equals the model trained for
    # exactly the epochs up to (the first occurrence of) the best validation score.
    params = dict(hidden_layer_sizes=(16,), early_stopping=True, validation_fraction=0.2,
                  n_iter_no_change=4, learning_rate_init=0.02, random_state=0)
    est = MLPClassifier(max_iter=200, **params).fit(X_DIGITS, Y_DIGITS)
    best_epoch = int(np.argmax(est.validation_scores_)) + 1
    assert best_epoch < est.n_iter_  # it did run past its best epoch
    upto = MLPClassifier(max_iter=best_epoch, **params).fit(X_DIGITS, Y_DIGITS)
    assert upto.n_iter_ == best_epoch
    assert_layers_equal(est, upto)
    # and the restored coefs_ are still what predict uses
    assert_array_equal(est.predict_proba(X_DIGITS), upto.predict_proba(X_DIGITS))
    assert_allclose(est.predict_proba(X_DIGITS), np_forward(est, X_DIGITS), rtol=1e-10,
                    atol=1e-13)


def test_early_stopping_attributes_without_early_stopping():
    # sklearn's test_early_stopping, second half
    est = MLPRegressor(max_iter=5, solver="sgd", random_state=0).fit(X_REG, Y_REG)
    assert est.validation_scores_ is None
    assert est.best_validation_score_ is None
    assert est.best_loss_ == min(est.loss_curve_)


def test_early_stopping_validation_set_too_small():
    X, y = make_regression(n_samples=10, n_features=5, random_state=0)
    est = MLPRegressor(early_stopping=True, random_state=0)  # 10% of 10 -> 1 sample
    with pytest.raises(ValueError, match="The validation set is too small"):
        est.fit(X, y)
    X, y = make_regression(n_samples=2, n_features=5, random_state=0)
    with pytest.raises(ValueError, match=re.escape(
        "The validation set is too small. Increase 'validation_fraction' or the size of "
        "your dataset."
    )):
        MLPRegressor(early_stopping=True, random_state=0).fit(X, y)


def test_early_stopping_is_stratified():
    """scikit-learn's test_early_stopping_stratified: the split is stratified on the
    binarized labels, so the error is scikit-learn's own, word for word (its wording
    changes between versions)."""
    X, y = [[1, 2], [2, 3], [3, 4], [4, 5]], [0, 0, 0, 1]
    with pytest.raises(ValueError) as theirs:
        skn.MLPClassifier(early_stopping=True).fit(X, y)
    with pytest.raises(ValueError) as ours:
        MLPClassifier(early_stopping=True).fit(X, y)
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
def test_partial_fit_rejects_early_stopping(Est):
    X, y = data_for(Est)
    est = Est(early_stopping=True, max_iter=5, random_state=0)
    kwargs = {"classes": np.unique(y)} if Est is MLPClassifier else {}
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping=True"):
        est.partial_fit(X, y, **kwargs)
    # and after a fit (sklearn's test_mlp_partial_fit_after_fit)
    est.fit(X, y)
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping=True"):
        est.partial_fit(X, y)


@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
def test_warm_start_with_early_stopping(Est):
    # sklearn's test_mlp_warm_start_with_early_stopping, compared with scikit-learn: the
    # validation scores go on across fits, and the same ones.
    X, y = (X_IRIS, Y_IRIS) if Est is MLPClassifier else (X_REG, Y_REG)
    est = Est(hidden_layer_sizes=(5,), max_iter=10, random_state=0, warm_start=True,
              early_stopping=True, learning_rate_init=0.01)
    ref = sk_twin(est)
    est.fit(X, y)
    ref.fit(X, y)
    first_best = [a.copy() for a in layers(est)]
    first_best_score = est.best_validation_score_
    assert_layers_close(est, ref, **PARITY)
    for model in (est, ref):
        model.set_params(max_iter=20)
        model.fit(X, y)
    assert len(est.validation_scores_) == len(ref.validation_scores_) > 10
    assert_allclose(est.validation_scores_, ref.validation_scores_, rtol=PARITY["rtol"])
    assert est.best_validation_score_ == max(est.validation_scores_)
    if Est is MLPRegressor:
        # the second fit found a better epoch: its weights are restored, as in sklearn
        assert max(est.validation_scores_[10:]) > first_best_score
        assert_layers_close(est, ref, **PARITY)
    else:
        # The second fit never beat the first fit's best score, so the best weights are
        # still the first fit's. (scikit-learn ends with the last epoch's weights here:
        # after its first fit coefs_ *is* its _best_coefs list, the second fit trains
        # those arrays in place, and "restoring" them restores the trained ones.)
        assert max(est.validation_scores_[10:]) <= first_best_score
        for a, b in zip(layers(est), first_best):
            assert_array_equal(a, b)


def test_diverging_fit_with_early_stopping_scores_nan():
    # sklearn's test_mlp_diverging_loss: a diverging model gets NaN validation scores
    # (no error: the restored best weights are finite)
    est = MLPRegressor(hidden_layer_sizes=100, activation="identity", solver="sgd",
                       learning_rate_init=1, max_iter=20, early_stopping=True,
                       n_iter_no_change=10, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        est.fit(_iris.data, Y_IRIS)
    assert str(est.validation_scores_[-1]) == str(np.nan)
    assert isinstance(est.validation_scores_[-1], float)
    assert all(np.isfinite(a).all() for a in layers(est))


def test_early_stopping_string_labels():
    # sklearn's test_mlp_early_stopping_string_labels
    y = np.array(["class_a", "class_b", "class_c"], dtype=object)[Y_IRIS]
    est = MLPClassifier(early_stopping=True, max_iter=20, random_state=42).fit(X_IRIS, y)
    assert len(est.validation_scores_) == est.n_iter_
    assert np.isfinite(est.validation_scores_).all()


def test_early_stopping_sample_weight_ones_equals_none():
    # sklearn's test_mlp_sample_weight_with_early_stopping
    X, y = make_regression(n_samples=100, n_features=2, n_informative=2, random_state=42)
    params = dict(hidden_layer_sizes=10, early_stopping=True, tol=1e-2,
                  learning_rate_init=0.01, batch_size=10, random_state=42)
    a = MLPRegressor(**params).fit(X, y, sample_weight=np.ones_like(y))
    b = MLPRegressor(**params).fit(X, y)
    assert_allclose(a.predict(X), b.predict(X))


# =========================================================================================
# 5. warm_start
# =========================================================================================


@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_warm_start_continues_from_previous_weights(solver):
    est = MLPClassifier(hidden_layer_sizes=(5,), solver=solver, warm_start=True,
                        max_iter=1, shuffle=False, learning_rate_init=0.05,
                        random_state=0)
    ref = sk_twin(est)
    est.fit(X_IRIS, Y_IRIS)
    ref.fit(X_IRIS, Y_IRIS)
    first = [a.copy() for a in layers(est)]
    assert_layers_close(est, ref, **PARITY)

    # the second fit starts from `first`: equal to a cold model whose weights are set to
    # `first` and trained one epoch with a fresh optimizer
    cold = MLPClassifier(**{**est.get_params(), "warm_start": False}).fit(X_IRIS, Y_IRIS)
    cold.coefs_ = [a.copy() for a in first[:2]]
    cold.intercepts_ = [a.copy() for a in first[2:]]
    cold.set_params(warm_start=True)
    cold.fit(X_IRIS, Y_IRIS)

    est.fit(X_IRIS, Y_IRIS)
    ref.fit(X_IRIS, Y_IRIS)
    assert not all(np.array_equal(a, b) for a, b in zip(first, layers(est)))
    assert_layers_close(est, ref, **PARITY)
    assert_layers_close(est, cold, **SAME_MATH)
    assert est.n_iter_ == ref.n_iter_ == 1  # n_iter_ counts the epochs of this fit
    assert est.t_ == ref.t_ == 2 * X_IRIS.shape[0]  # t_ goes on
    assert len(est.loss_curve_) == len(ref.loss_curve_) == 2
    assert_allclose(est.loss_curve_, ref.loss_curve_, rtol=PARITY["rtol"])


def test_warm_start_uses_a_new_optimizer():
    # SGD without momentum has no optimizer state: two warm-started epochs are one fit of
    # two epochs. With momentum (or Adam) the velocity / moments restart at zero, so they
    # are not (scikit-learn's rule; the previous test compares with it directly).
    X, y = X_IRIS, Y_IRIS
    base = dict(hidden_layer_sizes=(5,), solver="sgd", shuffle=False,
                learning_rate_init=0.05, random_state=0)
    for momentum, same in ((0.0, True), (0.9, False)):
        warm = MLPClassifier(momentum=momentum, warm_start=True, max_iter=1, **base)
        warm.fit(X, y)
        warm.fit(X, y)
        two = MLPClassifier(momentum=momentum, max_iter=2, **base).fit(X, y)
        if same:
            assert_layers_close(warm, two, **SAME_MATH)
        else:
            with pytest.raises(AssertionError):
                assert_layers_close(warm, two, rtol=1e-4, atol_factor=1e-6)
    adam = dict(solver="adam", shuffle=False, hidden_layer_sizes=(5,), batch_size=32,
                learning_rate_init=0.05, random_state=0)
    warm = MLPClassifier(warm_start=True, max_iter=1, **adam)
    warm.fit(X, y)
    warm.fit(X, y)
    two = MLPClassifier(max_iter=2, **adam).fit(X, y)
    with pytest.raises(AssertionError):  # Adam's bias correction restarted
        assert_layers_close(warm, two, rtol=1e-4, atol_factor=1e-6)


@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs"])
def test_warm_start_runs_max_iter_each_fit(Est, solver):
    # sklearn's test_warm_start_full_iteration / test_mlp_warm_start_no_convergence
    X, y = data_for(Est)
    est = Est(hidden_layer_sizes=(3,), solver=solver, warm_start=True, max_iter=4,
              n_iter_no_change=np.inf, random_state=0)
    with pytest.warns(ConvergenceWarning):
        est.fit(X, y)
    assert est.n_iter_ == 4
    est.set_params(max_iter=6)
    with pytest.warns(ConvergenceWarning):
        est.fit(X, y)
    assert est.n_iter_ == 6


def test_warm_start_with_other_architecture_or_features_raises():
    est = MLPClassifier(hidden_layer_sizes=(4,), warm_start=True, max_iter=2,
                        random_state=0).fit(X_IRIS, Y_IRIS)
    est.set_params(hidden_layer_sizes=(5,))
    with pytest.raises(ValueError):
        est.fit(X_IRIS, Y_IRIS)
    est.set_params(hidden_layer_sizes=(4,))
    with pytest.raises(ValueError, match="X has 3 features, but MLPClassifier is "
                                         "expecting 4 features"):
        est.fit(X_IRIS[:, :3], Y_IRIS)
    est.fit(X_IRIS, Y_IRIS)  # still usable
    assert est.n_iter_ == 2


@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_warm_start_with_other_classes_raises(solver):
    # sklearn's test_warm_start
    X, y = X_IRIS, Y_IRIS
    est = MLPClassifier(hidden_layer_sizes=2, solver=solver, warm_start=True,
                        random_state=42, tol=1e-2, max_iter=20).fit(X, y)
    est.fit(X, y)
    est.fit(X, np.array([0] * 40 + [1] * 40 + [2] * 70))  # same classes: fine
    for y_i in (np.array([0] * 75 + [1] * 75), np.array([0] * 50 + [1] * 50 + [3] * 50),
                np.array([0] * 37 + [1] * 37 + [2] * 38 + [3] * 38)):
        message = (
            "warm_start can only be used where `y` has the same classes as in the "
            "previous call to fit. Previously got [0 1 2], `y` has %s" % np.unique(y_i)
        )
        with pytest.raises(ValueError, match=re.escape(message)):
            est.fit(X, y_i)


def test_warm_start_lbfgs_matches_sklearn():
    est = MLPRegressor(hidden_layer_sizes=(4,), solver="lbfgs", warm_start=True,
                       max_iter=5, random_state=0)
    ref = sk_twin(est)
    for _ in range(3):
        est.fit(X_REG, Y_REG)
        ref.fit(X_REG, Y_REG)
    assert_allclose(est.loss_, ref.loss_, rtol=PARITY["rtol"])
    assert_layers_close(est, ref, **PARITY)


# =========================================================================================
# 6. partial_fit
# =========================================================================================


def test_partial_fit_classifier_requires_classes_first():
    est = MLPClassifier()
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        est.partial_fit(X_IRIS, Y_IRIS)
    est.partial_fit(X_IRIS, Y_IRIS, classes=[0, 1, 2])
    est.partial_fit(X_IRIS, Y_IRIS)  # not needed later
    with pytest.raises(ValueError, match=re.escape("`classes=[0, 1]` is not the same as "
                                                   "on last call to partial_fit")):
        est.partial_fit(X_IRIS, Y_IRIS, classes=[0, 1])


def test_partial_fit_unseen_class_raises():
    # sklearn's test_partial_fit_unseen_classes
    est = MLPClassifier(random_state=0)
    est.partial_fit([[1], [2], [3]], ["a", "b", "c"], classes=["a", "b", "c", "d"])
    est.partial_fit([[4]], ["d"])
    assert est.score([[1], [2], [3], [4]], ["a", "b", "c", "d"]) >= 0
    with pytest.raises(ValueError, match="`y` has classes not in `self.classes_`"):
        est.partial_fit([[5]], ["z"])


@pytest.mark.parametrize("solver", ["sgd", "adam"])
@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
def test_partial_fit_is_one_epoch_with_kept_optimizer(Est, solver):
    # N partial_fit calls == fit(max_iter=N) with shuffle=False (one epoch per call, the
    # optimizer state carried over); and the same as scikit-learn's partial_fit sequence.
    X, y = data_for(Est)
    params = dict(hidden_layer_sizes=(5,), solver=solver, shuffle=False, batch_size=32,
                  learning_rate="invscaling", learning_rate_init=0.05, tol=0.0,
                  random_state=0)
    kwargs = {"classes": np.unique(y)} if Est is MLPClassifier else {}
    est, ref = Est(**params), SK[Est](**params)
    n_calls = 4
    for i in range(n_calls):
        est.partial_fit(X, y, **kwargs)
        ref.partial_fit(X, y, **kwargs)
        assert est.n_iter_ == ref.n_iter_ == 1
        assert est.t_ == ref.t_ == (i + 1) * X.shape[0]
        assert len(est.loss_curve_) == i + 1
    assert_allclose(est.loss_curve_, ref.loss_curve_, rtol=PARITY["rtol"])
    assert_layers_close(est, ref, **PARITY)
    whole = Est(max_iter=n_calls, **params).fit(X, y)
    assert_layers_close(est, whole, **SAME_MATH)
    assert_allclose(est.loss_curve_, whole.loss_curve_, rtol=SAME_MATH["rtol"])


@pytest.mark.parametrize("solver", ["sgd", "adam"])
@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
def test_partial_fit_state_survives_pickle(Est, solver):
    X, y = data_for(Est)
    kwargs = {"classes": np.unique(y)} if Est is MLPClassifier else {}
    est = Est(hidden_layer_sizes=(5,), solver=solver, batch_size=32, random_state=0)
    est.partial_fit(X, y, **kwargs)
    est.partial_fit(X, y)
    restored = pickle.loads(pickle.dumps(est))
    assert_layers_equal(restored, est)
    reset = pickle.loads(pickle.dumps(est))
    del reset._optimizer  # what losing the optimizer state would give
    for _ in range(3):
        for model in (est, restored, reset):
            model.partial_fit(X, y)
    assert_layers_equal(restored, est)
    assert restored.t_ == est.t_
    assert restored.loss_curve_ == est.loss_curve_
    # the comparison is meaningful: without the kept state the result differs
    assert not layers_equal(reset, est)


def test_partial_fit_after_joblib_load_learns(tmp_path):
    # sklearn's test_mlp_loading_from_joblib_partial_fit
    est = MLPRegressor(hidden_layer_sizes=(42,), random_state=42, learning_rate_init=0.01,
                       max_iter=200).fit([[2]], [4])
    joblib.dump(est, tmp_path / "mlp.pkl")
    loaded = joblib.load(tmp_path / "mlp.pkl")
    for _ in range(200):
        loaded.partial_fit([[2]], [1])
    assert_allclose(loaded.predict([[2]]), [1], rtol=1e-4)


def test_partial_fit_matches_sklearn_multiclass_and_regression():
    # sklearn's test_partial_fit_classification / _regression: minibatch partial_fit
    # over chunks, compared with scikit-learn doing the same sequence.
    for Est, X, y in ((MLPClassifier, X_DIGITS, Y_DIGITS), (MLPRegressor, X_REG, Y_REG)):
        kwargs = {"classes": np.unique(y)} if Est is MLPClassifier else {}
        est = Est(hidden_layer_sizes=(8,), solver="sgd", momentum=0.5, random_state=1,
                  learning_rate_init=0.05)
        ref = sk_twin(est)
        sw = np.random.RandomState(0).uniform(0.2, 2.0, len(y))
        for i, chunk in enumerate(np.array_split(np.arange(len(y)), 5)):
            w = sw[chunk] if i % 2 else None  # weighted and unweighted chunks
            est.partial_fit(X[chunk], y[chunk], sample_weight=w, **kwargs)
            ref.partial_fit(X[chunk], y[chunk], sample_weight=w, **kwargs)
        assert_layers_close(est, ref, **PARITY)
        assert_allclose(est.loss_curve_, ref.loss_curve_, rtol=PARITY["rtol"])


@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
def test_partial_fit_unavailable_for_lbfgs(Est):
    est = Est(solver="lbfgs")
    assert not hasattr(est, "partial_fit")
    with pytest.raises(AttributeError, match="has no attribute 'partial_fit'") as exc:
        est.partial_fit(X_IRIS, Y_IRIS)
    assert "partial_fit is only available for stochastic optimizers" in str(
        exc.value.__cause__)


def test_partial_fit_multilabel():
    est = MLPClassifier(hidden_layer_sizes=(5,), random_state=0)
    ref = sk_twin(est)
    for model in (est, ref):
        model.partial_fit(X_ML, Y_ML, classes=[0, 1, 2, 3])
        model.partial_fit(X_ML, Y_ML)
    assert_layers_close(est, ref, **PARITY)
    assert est.predict(X_ML).shape == Y_ML.shape


# =========================================================================================
# 7. sample weights
# =========================================================================================


@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
@pytest.mark.parametrize("solver", ["lbfgs", "adam", "sgd"])
def test_integer_weights_equal_repeated_rows(Est, solver):
    # Exact equivalence needs the same minibatches: L-BFGS (full data), or one full batch
    # (n_repeated <= 200 = the 'auto' batch size) without shuffling.
    X, y = data_for(Est)
    X, y = X[:60], y[:60]
    sw = np.random.RandomState(0).randint(0, 4, X.shape[0])
    sw[:3] = [0, 2, 3]
    params = dict(hidden_layer_sizes=(5,), solver=solver, shuffle=False, max_iter=10,
                  learning_rate_init=0.02, alpha=1e-2, random_state=0)
    weighted = Est(**params).fit(X, y, sample_weight=sw)
    repeated = Est(**params).fit(np.repeat(X, sw, axis=0), np.repeat(y, sw, axis=0))
    assert np.repeat(X, sw, axis=0).shape[0] <= 200
    # rows with weight 0 change nothing; L-BFGS may amplify summation-order rounding
    # over its line searches, hence PARITY there
    tol_ = PARITY if solver == "lbfgs" else SAME_MATH
    assert_layers_close(weighted, repeated, **tol_)
    assert_allclose(weighted.loss_, repeated.loss_, rtol=tol_["rtol"])


@pytest.mark.parametrize("solver", ["lbfgs", "adam"])
def test_zero_weights_ignore_samples(solver):
    X, y = X_REG.copy(), Y_REG.copy()
    sw = np.ones(len(y))
    sw[::3] = 0.0
    X_garbage = X.copy()
    X_garbage[::3] = 1e3  # what a zero-weight row holds does not matter
    y_garbage = y.copy()
    y_garbage[::3] = -1e3
    params = dict(hidden_layer_sizes=(5,), solver=solver, shuffle=False, max_iter=10,
                  learning_rate_init=0.02, random_state=0)
    kept = MLPRegressor(**params).fit(X[sw > 0], y[sw > 0])
    zeroed = MLPRegressor(**params).fit(X_garbage, y_garbage, sample_weight=sw)
    tol_ = PARITY if solver == "lbfgs" else SAME_MATH
    assert_layers_close(zeroed, kept, **tol_)


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
def test_sample_weight_matches_sklearn(Est, solver):
    X, y = data_for(Est)
    sw = np.random.RandomState(3).uniform(0.1, 3.0, X.shape[0])
    est = Est(hidden_layer_sizes=(6,), solver=solver, batch_size=25, max_iter=6,
              learning_rate_init=0.02, alpha=1e-2, random_state=0)
    ref = sk_twin(est)
    est.fit(X, y, sample_weight=sw)
    ref.fit(X, y, sample_weight=sw)
    assert_allclose(est.loss_, ref.loss_, rtol=PARITY["rtol"])
    assert_layers_close(est, ref, **PARITY)
    # and weights make a difference
    assert not layers_equal(est, Est(**est.get_params()).fit(X, y))
    # score honours sample_weight as scikit-learn's does
    assert est.score(X, y, sample_weight=sw) == pytest.approx(
        ref.score(X, y, sample_weight=sw), rel=1e-6)


def test_sample_weight_ones_equals_unweighted():
    for solver in ("adam", "lbfgs"):
        params = dict(hidden_layer_sizes=(5,), solver=solver, max_iter=8, random_state=0)
        a = MLPClassifier(**params).fit(X_IRIS, Y_IRIS, sample_weight=np.ones(150))
        b = MLPClassifier(**params).fit(X_IRIS, Y_IRIS)
        assert_layers_close(a, b, **(PARITY if solver == "lbfgs" else SAME_MATH))


# =========================================================================================
# 8. dtypes
# =========================================================================================


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
def test_float32_is_preserved(Est, solver):
    X, y = data_for(Est)
    X32 = X.astype(np.float32)
    est = Est(hidden_layer_sizes=(6,), solver=solver, max_iter=8, batch_size=32,
              random_state=0).fit(X32, y)
    assert all(a.dtype == np.float32 for a in layers(est))
    # the training itself ran in float32 (no float64 copy of parameters / state)
    assert est._flat.dtype == np.float32
    if solver != "lbfgs":
        assert est._optimizer.state_1.dtype == np.float32
        if solver == "adam":
            assert est._optimizer.state_2.dtype == np.float32
    if Est is MLPClassifier:
        assert est.predict_proba(X32).dtype == np.float32
        assert est.predict_log_proba(X32).dtype == np.float32
    else:
        assert est.predict(X32).dtype == np.float32
    # and it is the float64 model to float32 rounding
    est64 = Est(**est.get_params()).fit(X, y)
    assert all(a.dtype == np.float64 for a in layers(est64))
    assert_layers_close(est, est64, **F32)
    # float32 keeps float32 across warm starts / partial_fit
    if solver != "lbfgs":
        est.partial_fit(X32, y)
        assert all(a.dtype == np.float32 for a in layers(est))


@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
def test_float32_matches_sklearn_float32(Est):
    # sklearn's test_mlp_param_dtypes / dtypes_casting, compared with scikit-learn
    X, y = data_for(Est)
    X32 = X.astype(np.float32)
    est = Est(hidden_layer_sizes=(5, 3), random_state=1, max_iter=10, batch_size=40)
    ref = sk_twin(est)
    est.fit(X32, y)
    ref.fit(X32, y)
    assert all(a.dtype == np.float32 for a in layers(ref))
    assert_layers_close(est, ref, **F32)
    if Est is MLPClassifier:
        assert_array_equal(est.predict(X32), ref.predict(X32))
        assert_allclose(est.predict_proba(X32), ref.predict_proba(X32), rtol=1e-3,
                        atol=1e-5)
    else:
        assert_allclose(est.predict(X32), ref.predict(X32), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
def test_int_X_trains_in_float64(Est):
    X = np.random.RandomState(0).randint(0, 5, size=(60, 4))
    y = (X.sum(axis=1) > 8).astype(int)
    est = Est(hidden_layer_sizes=(4,), max_iter=5, random_state=0).fit(X, y)
    assert all(a.dtype == np.float64 for a in layers(est))
    same = Est(**est.get_params()).fit(X.astype(np.float64), y)
    assert_layers_equal(est, same)
    out = est.predict_proba(X) if Est is MLPClassifier else est.predict(X)
    assert out.dtype == np.float64
    assert_array_equal(out, same.predict_proba(X.astype(float)) if Est is MLPClassifier
                       else same.predict(X.astype(float)))


@pytest.mark.parametrize("first,second", [(np.float64, np.float32),
                                          (np.float32, np.float64)])
def test_partial_fit_with_other_dtype_keeps_optimizer_state(first, second):
    # Chunks of a stream may come in float32 and float64: scikit-learn keeps its Adam
    # moments across partial_fit calls whatever the chunk's dtype. Losing them would
    # restart Adam's bias correction (a ~learning_rate-sized jump per parameter).
    X, y = X_IRIS, Y_IRIS
    est = MLPClassifier(hidden_layer_sizes=(5,), learning_rate_init=0.05, random_state=0)
    ref = sk_twin(est)
    for model in (est, ref):
        model.partial_fit(X.astype(first), y, classes=[0, 1, 2])
        model.partial_fit(X.astype(first), y)
        for _ in range(3):
            model.partial_fit(X.astype(second), y)
    # float32 rounding over 5 epochs (~1e-6), far below the effect of a reset (~1e-2)
    assert_layers_close(est, ref, rtol=1e-4, atol_factor=1e-5)


@pytest.mark.parametrize("first,second", [(np.float64, np.float32),
                                          (np.float32, np.float64)])
def test_model_dtype_kept_when_trained_on_other_dtype(first, second):
    # In scikit-learn the parameters keep the dtype they were initialised with (the
    # first fit's X) when a warm-started fit or a partial_fit gets X of the other float
    # dtype: a float64 model is not silently downcast to float32 by float32 data.
    X, y = X_IRIS, Y_IRIS
    for how in ("warm_start", "partial_fit"):
        est = MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, random_state=0,
                            warm_start=how == "warm_start")
        ref = sk_twin(est)
        for model in (est, ref):
            model.fit(X.astype(first), y)
            if how == "warm_start":
                model.fit(X.astype(second), y)
            else:
                model.partial_fit(X.astype(second), y)
        assert [a.dtype for a in layers(est)] == [a.dtype for a in layers(ref)], how
        assert all(a.dtype == first for a in layers(est)), how


# =========================================================================================
# 9. targets: string, boolean, multilabel labels; probabilities
# =========================================================================================


@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_string_labels(solver):
    names = np.array(["setosa", "versicolor", "virginica"])
    y = names[Y_IRIS]
    est = MLPClassifier(hidden_layer_sizes=(5,), solver=solver, max_iter=100,
                        learning_rate_init=0.01, random_state=0).fit(X_IRIS, y)
    ref = MLPClassifier(**est.get_params()).fit(X_IRIS, Y_IRIS)
    assert_array_equal(est.classes_, names)
    pred = est.predict(X_IRIS)
    assert pred.dtype == y.dtype
    assert set(pred) <= set(names)
    assert_array_equal(pred, names[ref.predict(X_IRIS)])
    assert est.score(X_IRIS, y) > 0.8
    # object labels too
    est_obj = MLPClassifier(**est.get_params()).fit(X_IRIS, y.astype(object))
    ref_obj = sk_twin(est_obj).fit(X_IRIS, y.astype(object))
    assert est_obj.predict(X_IRIS).dtype == ref_obj.predict(X_IRIS).dtype
    assert est_obj.classes_.dtype == ref_obj.classes_.dtype
    assert_array_equal(est_obj.predict(X_IRIS), pred)


def test_boolean_labels():
    y = Y_IRIS == 0
    est = MLPClassifier(hidden_layer_sizes=(5,), max_iter=50, random_state=0).fit(X_IRIS, y)
    ref = sk_twin(est).fit(X_IRIS, y)
    assert_array_equal(est.classes_, [False, True])
    pred = est.predict(X_IRIS)
    assert pred.dtype == np.bool_ == ref.predict(X_IRIS).dtype
    assert_array_equal(pred, ref.predict(X_IRIS))
    assert est.out_activation_ == "logistic"
    assert est.predict_proba(X_IRIS).shape == (150, 2)


def test_multilabel_indicator_targets():
    # sklearn's test_multilabel_classification / test_predict_proba_multilabel
    est = MLPClassifier(solver="lbfgs", hidden_layer_sizes=30, random_state=0,
                        max_iter=200).fit(X_ML, Y_ML)
    ref = sk_twin(est).fit(X_ML, Y_ML)
    pred = est.predict(X_ML)
    assert pred.shape == Y_ML.shape
    assert pred.dtype == ref.predict(X_ML).dtype
    assert set(np.unique(pred)) <= {0, 1}
    assert_array_equal(est.classes_, [0, 1, 2, 3])
    assert est.out_activation_ == "logistic"
    assert est.score(X_ML, Y_ML) > 0.9
    proba = est.predict_proba(X_ML)
    assert proba.shape == Y_ML.shape
    assert_array_equal(proba > 0.5, pred.astype(bool))
    # independent sigmoids: rows do not sum to 1
    assert np.abs(proba.sum(axis=1) - 1).max() > 0.1
    assert_allclose(est.predict_log_proba(X_ML), np.log(proba))


@pytest.mark.parametrize("kind", ["default", "binary"])
def test_predict_proba_and_log_proba(kind):
    # sklearn's test_predict_proba_binary / multiclass
    X, y = data_for(MLPClassifier, kind)
    est = MLPClassifier(hidden_layer_sizes=(5,), max_iter=30, random_state=0).fit(X, y)
    proba = est.predict_proba(X)
    n_classes = len(np.unique(y))
    assert proba.shape == (X.shape[0], n_classes)
    assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    assert (proba >= 0).all() and (proba <= 1).all()
    log_proba = est.predict_log_proba(X)
    assert_allclose(log_proba, np.log(proba))
    assert_array_equal(proba.argmax(axis=1), log_proba.argmax(axis=1))
    assert_array_equal(est.classes_[proba.argmax(axis=1)], est.predict(X))
    assert_allclose(proba if kind == "default" else proba[:, 1],
                    np_forward(est, X) if kind == "default" else np_forward(est, X)[:, 0],
                    rtol=1e-10, atol=1e-14)


# =========================================================================================
# 10. pandas input
# =========================================================================================


@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
def test_dataframe_feature_names(Est):
    pd = pytest.importorskip("pandas")
    X, y = data_for(Est)
    cols = [f"f{i}" for i in range(X.shape[1])]
    df = pd.DataFrame(X, columns=cols)
    est = Est(hidden_layer_sizes=(4,), max_iter=5, random_state=0).fit(df, pd.Series(y))
    assert_array_equal(est.feature_names_in_, cols)
    assert est.n_features_in_ == X.shape[1]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        pred_df = est.predict(df)
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        pred_np = est.predict(X)
    assert_array_equal(pred_np, pred_df)
    # same model as the ndarray fit
    assert_layers_equal(est, Est(**est.get_params()).fit(X, y))
    renamed = df.rename(columns={"f0": "other"})
    with pytest.raises(ValueError, match="The feature names should match those that were "
                                         "passed during fit"):
        est.predict(renamed)
    with pytest.raises(ValueError, match="The feature names should match"):
        est.predict(df[cols[::-1]])
    # fitted on a ndarray, predicting on a DataFrame warns the other way round
    est_np = Est(**est.get_params()).fit(X, y)
    assert not hasattr(est_np, "feature_names_in_")
    with pytest.warns(UserWarning, match="X has feature names, but"):
        est_np.predict(df)


@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
def test_dataframe_with_early_stopping_no_warning(Est):
    # sklearn's test_preserve_feature_names
    pd = pytest.importorskip("pandas")
    rng = np.random.RandomState(0)
    X = pd.DataFrame(rng.randn(10, 2), columns=["colname_a", "colname_b"])
    y = pd.Series(np.full(10, 1), name="colname_y")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        Est(early_stopping=True, validation_fraction=0.2).fit(X, y)


# =========================================================================================
# 11. sparse X
# =========================================================================================

SPARSE_CONTAINERS = [sp.csr_matrix, sp.csr_array, sp.csc_matrix, sp.csc_array]


@pytest.fixture
def no_densify(monkeypatch):
    """Make densifying a sparse X (a matrix as wide as X_DIGITS) an error for the
    duration of a test. Other sparse matrices (LabelBinarizer builds the one-hot targets
    as a sparse matrix and densifies it) are left alone."""
    width = X_DIGITS.shape[1]
    for cls in SPARSE_CONTAINERS + [sp.coo_matrix, sp.coo_array]:
        for name in ("toarray", "todense"):
            original = getattr(cls, name)

            def guarded(self, *args, _original=original, **kwargs):
                if self.ndim == 2 and self.shape[1] == width:
                    raise AssertionError("sparse input was densified")
                return _original(self, *args, **kwargs)

            monkeypatch.setattr(cls, name, guarded)


def _sparse_digits():
    X = X_DIGITS.copy()
    X[X < 0.3] = 0.0  # a sparse-ish matrix (~60% zeros)
    return X


@pytest.mark.parametrize("container", SPARSE_CONTAINERS)
@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_sparse_equals_dense(container, solver, no_densify):
    X = _sparse_digits()
    Xs = container(X)
    with pytest.raises(AssertionError, match="densified"):
        Xs.toarray()  # the guard is armed
    params = dict(hidden_layer_sizes=(8,), solver=solver, max_iter=10, batch_size=50,
                  random_state=0)
    dense = MLPClassifier(**params).fit(X, Y_DIGITS)
    sparse = MLPClassifier(**params).fit(Xs, Y_DIGITS)
    tol_ = PARITY if solver == "lbfgs" else SAME_MATH
    assert_layers_close(sparse, dense, **tol_)
    assert_allclose(sparse.loss_, dense.loss_, rtol=tol_["rtol"])
    # predicting on sparse == predicting on dense, for the same model
    assert_allclose(sparse.predict_proba(Xs), sparse.predict_proba(X), rtol=1e-10,
                    atol=1e-14)
    assert_array_equal(sparse.predict(Xs), sparse.predict(X))
    assert sparse.score(Xs, Y_DIGITS) == sparse.score(X, Y_DIGITS)


@pytest.mark.parametrize("container", [sp.csr_matrix, sp.csc_array])
def test_sparse_regression_early_stopping_and_weights_match_sklearn(container, no_densify):
    X = _sparse_digits()
    y = scale(X @ np.linspace(-1, 1, 64))
    sw = np.random.RandomState(0).uniform(0.5, 2.0, len(y))
    est = MLPRegressor(hidden_layer_sizes=(6,), early_stopping=True, max_iter=8,
                       batch_size=40, random_state=0)
    est.fit(container(X), y, sample_weight=sw)
    ref = sk_twin(est).fit(X, y, sample_weight=sw)  # scikit-learn on the dense matrix
    assert_layers_close(est, ref, **PARITY)
    assert_allclose(est.validation_scores_, ref.validation_scores_, rtol=PARITY["rtol"])


def test_sparse_float32_and_noncanonical():
    X = _sparse_digits().astype(np.float32)
    Xs = sp.csr_matrix(X)
    est = MLPClassifier(hidden_layer_sizes=(6,), max_iter=5, random_state=0).fit(Xs, Y_DIGITS)
    assert all(a.dtype == np.float32 for a in layers(est))
    assert est.predict_proba(Xs).dtype == np.float32
    # a CSR matrix with duplicate, unsorted entries means the same matrix
    coo = Xs.tocoo()
    half = coo.data / 2
    dup = sp.csr_matrix((np.concatenate([half, half])[::-1],
                         (np.concatenate([coo.row, coo.row])[::-1],
                          np.concatenate([coo.col, coo.col])[::-1])), shape=Xs.shape)
    dup.has_canonical_format = False
    indices_before = dup.indices.copy()
    est_dup = MLPClassifier(**est.get_params()).fit(dup, Y_DIGITS)
    assert_layers_close(est_dup, est, **F32)
    assert_allclose(est.predict_proba(dup), est.predict_proba(Xs), rtol=1e-5, atol=1e-6)
    assert_array_equal(dup.indices, indices_before)  # the caller's matrix is untouched


# =========================================================================================
# 12. read-only and memory-mapped input
# =========================================================================================


@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
def test_readonly_and_memmap_input(Est, solver, tmp_path):
    X, y = data_for(Est)
    sw = np.linspace(0.5, 1.5, len(y))
    np.save(tmp_path / "X.npy", X)
    X_mm = np.load(tmp_path / "X.npy", mmap_mode="r")
    assert isinstance(X_mm, np.memmap) and not X_mm.flags.writeable
    X.tofile(tmp_path / "X.raw")
    X_raw = np.memmap(tmp_path / "X.raw", dtype=X.dtype, mode="r", shape=X.shape)
    X_ro, y_ro, sw_ro = X.copy(), y.copy(), sw.copy()
    for a in (X_ro, y_ro, sw_ro):
        a.flags.writeable = False
    X_f = np.asfortranarray(X)
    params = dict(hidden_layer_sizes=(5,), solver=solver, max_iter=6, random_state=0)
    base = Est(**params).fit(X, y, sample_weight=sw)
    expected = base.predict(X)
    for X_in, y_in, sw_in in ((X_mm, y, sw), (X_raw, y, sw), (X_ro, y_ro, sw_ro),
                              (X_f, y, sw)):
        est = Est(**params).fit(X_in, y_in, sample_weight=sw_in)
        assert_layers_close(est, base, rtol=1e-12, atol_factor=1e-14)
        assert_allclose(est.predict(X_in), expected, rtol=1e-12)
        assert_allclose(base.predict(X_in), expected, rtol=1e-12)
    assert not X_ro.flags.writeable  # untouched


def test_readonly_memmap_early_stopping_and_partial_fit(tmp_path):
    np.save(tmp_path / "X.npy", X_DIGITS)
    X_mm = np.load(tmp_path / "X.npy", mmap_mode="r")
    a = MLPClassifier(hidden_layer_sizes=(5,), early_stopping=True, max_iter=5,
                      random_state=0).fit(X_mm, Y_DIGITS)
    b = MLPClassifier(**a.get_params()).fit(X_DIGITS, Y_DIGITS)
    assert_layers_close(a, b, rtol=1e-12, atol_factor=1e-14)
    c = MLPClassifier(hidden_layer_sizes=(5,), random_state=0)
    c.partial_fit(X_mm, Y_DIGITS, classes=np.arange(10))
    c.partial_fit(X_mm[::2], Y_DIGITS[::2])  # a read-only strided view
    assert np.isfinite(c.predict_proba(X_mm)).all()


# =========================================================================================
# 13. determinism
# =========================================================================================


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
def test_same_random_state_bitwise_identical(Est, solver):
    X, y = (X_DIGITS, Y_DIGITS) if Est is MLPClassifier else (X_REG, Y_REG)
    params = dict(hidden_layer_sizes=(32, 16), solver=solver, max_iter=8, random_state=7)
    a = Est(**params).fit(X, y)
    b = Est(**params).fit(X, y)
    assert_layers_equal(a, b)
    assert a.loss_ == b.loss_
    if solver != "lbfgs":
        assert a.loss_curve_ == b.loss_curve_
    # refitting the same estimator gives the same model again
    a.fit(X, y)
    assert_layers_equal(a, b)
    c = Est(**{**params, "random_state": 8}).fit(X, y)
    assert not any(np.array_equal(p, q) for p, q in zip(layers(a), layers(c)))


def test_random_state_instance_matches_sklearn():
    rs_a, rs_b = np.random.RandomState(3), np.random.RandomState(3)
    est = MLPClassifier(hidden_layer_sizes=(4,), max_iter=4, random_state=rs_a)
    ref = skn.MLPClassifier(hidden_layer_sizes=(4,), max_iter=4, random_state=rs_b)
    for _ in range(2):  # the instance's stream goes on across fits
        est.fit(X_IRIS, Y_IRIS)
        ref.fit(X_IRIS, Y_IRIS)
        assert_layers_close(est, ref, **PARITY)


# =========================================================================================
# 14. non-finite guard
# =========================================================================================

NONFINITE_MSG = ("Solver produced non-finite parameter weights. The input data may "
                 "contain large values and need to be preprocessed.")


def test_nonfinite_params_huge_X():
    # sklearn's test_nonfinite_params
    rng = np.random.RandomState(0)
    X = np.finfo(np.float64).max * rng.uniform(size=(10, 2))
    y = rng.standard_normal(size=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(ValueError, match=re.escape(NONFINITE_MSG)):
            MLPRegressor().fit(X, y)


@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
def test_nonfinite_params_sgd_blowup(Est):
    X, y = data_for(Est)
    # the loss only grows, so without n_iter_no_change the fit would stop (finite) after
    # 11 epochs; 30 epochs of x1e18 growth overflow
    est = Est(solver="sgd", learning_rate_init=1e3, max_iter=30, n_iter_no_change=1000,
              random_state=0)
    ref = sk_twin(est)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(ValueError, match=re.escape(NONFINITE_MSG)):
            est.fit(X * 1e6, y)
        with pytest.raises(ValueError, match=re.escape(NONFINITE_MSG)):
            ref.fit(X * 1e6, y)  # scikit-learn agrees the fit blows up


def test_nonfinite_params_float32():
    X = X_REG.astype(np.float32) * 1e30
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(ValueError, match=re.escape(NONFINITE_MSG)):
            MLPRegressor(solver="sgd", learning_rate_init=10.0, max_iter=3,
                         random_state=0).fit(X, Y_REG)


# =========================================================================================
# 15. parameter validation
# =========================================================================================

# the values of scikit-learn's parameters that only fastprop accepts
INVALID_PARAMS = [
    (MLPClassifier, dict(activation="foo")),
    (MLPClassifier, dict(solver="newton")),
    (MLPClassifier, dict(alpha=-1)),
    (MLPClassifier, dict(hidden_layer_sizes=0)),
    (MLPClassifier, dict(hidden_layer_sizes="10")),
    (MLPClassifier, dict(batch_size=0)),
    (MLPClassifier, dict(batch_size="big")),
    (MLPClassifier, dict(learning_rate_init=0)),
    (MLPClassifier, dict(learning_rate="cyclic")),
    (MLPClassifier, dict(max_iter=0)),
    (MLPClassifier, dict(momentum=1.5)),
    (MLPClassifier, dict(beta_1=1.0)),
    (MLPClassifier, dict(beta_2=-0.1)),
    (MLPClassifier, dict(epsilon=0.0)),
    (MLPClassifier, dict(validation_fraction=1.0)),
    (MLPClassifier, dict(n_iter_no_change=0)),
    (MLPClassifier, dict(max_fun=0)),
    (MLPClassifier, dict(shuffle="yes")),
    (MLPClassifier, dict(tol=-1e-4)),
    (MLPClassifier, dict(power_t=-0.5)),
    (MLPRegressor, dict(loss="log_loss")),
    (MLPRegressor, dict(loss="quantile")),
    (MLPRegressor, dict(alpha=-1)),
    (MLPRegressor, dict(hidden_layer_sizes=0)),
    (MLPRegressor, dict(batch_size=0)),
    (MLPRegressor, dict(learning_rate_init=0)),
]


@pytest.mark.parametrize("Est,params", INVALID_PARAMS,
                         ids=[f"{E.__name__}-{p}" for E, p in INVALID_PARAMS])
def test_invalid_params_raise_like_sklearn(Est, params):
    X, y = data_for(Est)
    est = Est(**params)  # no validation at construction
    with pytest.raises(InvalidParameterError) as exc:
        est.fit(X, y)
    with pytest.raises(InvalidParameterError) as ref_exc:
        SK[Est](**params).fit(X, y)
    # the same message, up to the order in which a set of options is printed, and the
    # options only fastprop has (FASTPROP_OPTIONS)
    def normalized(msg):
        return (re.sub(r"\{([^{}]*)\}", "{}", msg),
                [set(m.split(", ")) for m in re.findall(r"\{([^{}]*)\}", msg)])
    text, options = normalized(str(exc.value))
    ref_text, ref_options = normalized(str(ref_exc.value))
    assert text == ref_text
    assert len(options) == len(ref_options)
    for ours, theirs in zip(options, ref_options):
        assert ours >= theirs and ours - theirs <= FASTPROP_OPTIONS
    if "solver" not in params:
        with pytest.raises(InvalidParameterError):
            kwargs = {"classes": np.unique(y)} if Est is MLPClassifier else {}
            Est(**params).partial_fit(X, y, **kwargs)


@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
@pytest.mark.parametrize("hidden", [[3, -1], (0, 4), np.array([2, 0])])
def test_nonpositive_hidden_layer_size_raises(Est, hidden):
    X, y = data_for(Est)
    with pytest.raises(ValueError, match="hidden_layer_sizes must be > 0") as exc:
        Est(hidden_layer_sizes=hidden).fit(X, y)
    with pytest.raises(ValueError) as ref_exc:
        SK[Est](hidden_layer_sizes=hidden).fit(X, y)
    assert str(exc.value) == str(ref_exc.value)


def test_classifier_has_no_loss_parameter():
    assert "loss" not in MLPClassifier().get_params()
    assert MLPRegressor().get_params()["loss"] == "squared_error"
    with pytest.raises(TypeError):
        MLPClassifier(loss="log_loss")
    # same parameter names and defaults as scikit-learn, plus fastprop's own options
    own = {"class_weight", "max_grad_norm", "scoring", "rho", "dropout", "huber_delta"}
    for Est in (MLPClassifier, MLPRegressor):
        ours, theirs = Est().get_params(), SK[Est]().get_params()
        assert {k: v for k, v in ours.items() if k in theirs} == theirs
        assert set(ours) - set(theirs) <= own


def test_bad_input_errors_like_sklearn():
    est = MLPClassifier(max_iter=5, random_state=0)
    X_nan = X_IRIS.copy()
    X_nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        est.fit(X_nan, Y_IRIS)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        est.fit(X_IRIS, Y_IRIS[:-1])
    with pytest.raises(ValueError, match="Unknown label type"):
        est.fit(X_IRIS, np.linspace(0, 1, 150))
    est.fit(X_IRIS, Y_IRIS)
    with pytest.raises(ValueError, match="X has 3 features, but MLPClassifier is "
                                         "expecting 4 features as input"):
        est.predict(X_IRIS[:, :3])
    with pytest.raises(ValueError, match="sample_weight.shape"):
        est.fit(X_IRIS, Y_IRIS, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="Some value\\(s\\) of y are negative"):
        MLPRegressor(loss="poisson").fit(X_REG, Y_REG)
    from sklearn.exceptions import NotFittedError
    with pytest.raises(NotFittedError):
        MLPRegressor().predict(X_REG)


def test_estimator_tags_match_sklearn():
    for Est in (MLPClassifier, MLPRegressor):
        assert Est().__sklearn_tags__() == SK[Est]().__sklearn_tags__()
    assert issubclass(MLPClassifier, MLPEstimator)
    assert issubclass(MLPRegressor, MLPEstimator)


# =========================================================================================
# 16. meta-estimators, cloning, persistence
# =========================================================================================


def test_pipeline_gridsearch_cross_val_clone():
    X, y = _iris.data, Y_IRIS
    pipe = Pipeline([("scale", StandardScaler()),
                     ("mlp", MLPClassifier(hidden_layer_sizes=(5,), max_iter=50,
                                           random_state=0))])
    ref_pipe = Pipeline([("scale", StandardScaler()),
                         ("mlp", skn.MLPClassifier(hidden_layer_sizes=(5,), max_iter=50,
                                                   random_state=0))])
    grid = {"mlp__alpha": [1e-4, 1.0], "mlp__solver": ["adam", "lbfgs"]}
    search = GridSearchCV(pipe, grid, cv=3, n_jobs=2).fit(X, y)
    ref_search = GridSearchCV(ref_pipe, grid, cv=3, n_jobs=1).fit(X, y)
    assert_allclose(search.cv_results_["mean_test_score"],
                    ref_search.cv_results_["mean_test_score"], atol=0.02)
    assert search.best_params_ == ref_search.best_params_
    assert isinstance(search.best_estimator_[-1], MLPClassifier)
    assert search.score(X, y) > 0.8

    scores = cross_val_score(pipe, X, y, cv=3)
    ref_scores = cross_val_score(ref_pipe, X, y, cv=3)
    assert_allclose(scores, ref_scores, atol=0.02)

    fitted = clone(pipe).fit(X, y)
    cloned = clone(fitted)
    assert not hasattr(cloned[-1], "coefs_")
    assert cloned.get_params()["mlp__hidden_layer_sizes"] == (5,)
    assert_array_equal(cloned.fit(X, y).predict_proba(X), fitted.predict_proba(X))


@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_pickle_and_joblib_round_trips(solver, tmp_path):
    pipe = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(6,),
                                                         solver=solver, max_iter=30,
                                                         random_state=0))
    pipe.fit(_iris.data, Y_IRIS)
    proba = pipe.predict_proba(_iris.data)
    loaded = pickle.loads(pickle.dumps(pipe))
    assert_array_equal(loaded.predict_proba(_iris.data), proba)
    assert_array_equal(loaded.predict(_iris.data), pipe.predict(_iris.data))
    assert_layers_equal(loaded[-1], pipe[-1])
    joblib.dump(pipe, tmp_path / "pipe.joblib")
    jl = joblib.load(tmp_path / "pipe.joblib")
    assert_array_equal(jl.predict_proba(_iris.data), proba)
    # a memory-mapped joblib load (read-only parameter arrays) predicts the same
    joblib.dump(pipe, tmp_path / "pipe_mm.joblib")
    jl_mm = joblib.load(tmp_path / "pipe_mm.joblib", mmap_mode="r")
    assert_array_equal(jl_mm.predict_proba(_iris.data), proba)
    # a regressor too
    reg = MLPRegressor(hidden_layer_sizes=(4,), solver=solver, max_iter=10,
                       random_state=0).fit(X_REG, Y_REG)
    assert_array_equal(pickle.loads(pickle.dumps(reg)).predict(X_REG), reg.predict(X_REG))


def test_unpickle_in_fresh_process(tmp_path):
    X = _iris.data
    pipe = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(6,),
                                                         max_iter=30, random_state=0))
    pipe.fit(X, Y_IRIS)
    reg = MLPRegressor(hidden_layer_sizes=(4,), max_iter=10, random_state=0,
                       solver="sgd").fit(X_REG.astype(np.float32), Y_REG)
    with open(tmp_path / "models.pkl", "wb") as f:
        pickle.dump((pipe, reg), f)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "X_reg.npy", X_REG.astype(np.float32))
    script = (
        "import pickle, sys, numpy as np\n"
        "d = sys.argv[1]\n"
        "pipe, reg = pickle.load(open(d + '/models.pkl', 'rb'))\n"
        "np.save(d + '/proba.npy', pipe.predict_proba(np.load(d + '/X.npy')))\n"
        "np.save(d + '/pred.npy', pipe.predict(np.load(d + '/X.npy')))\n"
        "np.save(d + '/reg.npy', reg.predict(np.load(d + '/X_reg.npy')))\n"
        "print(type(pipe[-1]).__module__)\n"
    )
    res = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "fastprop._mlp"
    assert_array_equal(np.load(tmp_path / "proba.npy"), pipe.predict_proba(X))
    assert_array_equal(np.load(tmp_path / "pred.npy"), pipe.predict(X))
    reg_pred = np.load(tmp_path / "reg.npy")
    assert reg_pred.dtype == np.float32
    assert_array_equal(reg_pred, reg.predict(X_REG.astype(np.float32)))


# =========================================================================================
# 17. assigning coefs_ / intercepts_
# =========================================================================================


@pytest.mark.parametrize("Est,kind", [(MLPClassifier, "default"), (MLPClassifier, "binary"),
                                      (MLPRegressor, "default")])
def test_assigned_weights_are_used(Est, kind):
    X, y = data_for(Est, kind)
    est = Est(hidden_layer_sizes=(5, 4), max_iter=5, random_state=0).fit(X, y)
    out = (lambda: est.predict_proba(X)) if Est is MLPClassifier else (
        lambda: est.predict(X))
    before = out()
    assert_allclose(before if Est is MLPRegressor or kind == "default" else before[:, 1],
                    np_forward(est, X).squeeze(), rtol=1e-10, atol=1e-13)

    # replace one list item
    est.coefs_[0] = est.coefs_[0] * 2
    after = out()
    assert not np.allclose(after, before)
    expected = np_forward(est, X).squeeze()
    assert_allclose(after if Est is MLPRegressor or kind == "default" else after[:, 1],
                    expected, rtol=1e-10, atol=1e-13)

    # replace the whole lists
    rng = np.random.RandomState(0)
    est.coefs_ = [rng.normal(size=W.shape) for W in est.coefs_]
    est.intercepts_ = [rng.normal(size=b.shape) for b in est.intercepts_]
    expected = np_forward(est, X).squeeze()
    got = out()
    assert_allclose(got if Est is MLPRegressor or kind == "default" else got[:, 1],
                    expected, rtol=1e-10, atol=1e-13)

    # in-place edit of a (fitted) parameter array
    est.intercepts_[-1][...] += 1.0
    expected = np_forward(est, X).squeeze()
    got = out()
    assert_allclose(got if Est is MLPRegressor or kind == "default" else got[:, 1],
                    expected, rtol=1e-10, atol=1e-13)


def test_assigned_weights_match_sklearn_with_same_assignment():
    est = MLPClassifier(hidden_layer_sizes=(5,), max_iter=5, random_state=0)
    ref = sk_twin(est)
    est.fit(X_IRIS, Y_IRIS)
    ref.fit(X_IRIS, Y_IRIS)
    rng = np.random.RandomState(1)
    new_coefs = [rng.normal(size=W.shape) for W in est.coefs_]
    new_inter = [rng.normal(size=b.shape) for b in est.intercepts_]
    for model in (est, ref):
        model.coefs_ = [W.copy() for W in new_coefs]
        model.intercepts_ = [b.copy() for b in new_inter]
    assert_allclose(est.predict_proba(X_IRIS), ref.predict_proba(X_IRIS), rtol=1e-10)
    # training continues from the assigned weights (partial_fit, warm start)
    for model in (est, ref):
        model.partial_fit(X_IRIS, Y_IRIS)
    assert_layers_close(est, ref, **PARITY)
    for model in (est, ref):
        model.coefs_[1] = model.coefs_[1] * 0.5
        model.set_params(warm_start=True, max_iter=2)
        model.fit(X_IRIS, Y_IRIS)
    assert_layers_close(est, ref, **PARITY)


def test_assigned_array_stays_the_parameter():
    # As in scikit-learn: an array assigned to coefs_[i] *is* the model's parameter, and
    # predict does not replace it (predict must not change the estimator's state), so
    # later in-place edits of that array take effect.
    est = MLPClassifier(hidden_layer_sizes=(5,), max_iter=5, random_state=0).fit(X_IRIS,
                                                                                 Y_IRIS)
    W = est.coefs_[0] * 2
    est.coefs_[0] = W
    est.predict_proba(X_IRIS)
    assert est.coefs_[0] is W
    W[...] = 0.0
    assert_allclose(est.predict_proba(X_IRIS), np_forward(est, X_IRIS), rtol=1e-10)


@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
def test_assigned_weights_of_wrong_shape_raise(Est):
    X, y = data_for(Est)
    est = Est(hidden_layer_sizes=(5,), max_iter=3, random_state=0).fit(X, y)
    predict = est.predict
    good = [W.copy() for W in est.coefs_], [b.copy() for b in est.intercepts_]

    est.coefs_[0] = np.zeros((X.shape[1] + 1, 5))  # wrong number of features
    with pytest.raises(ValueError):
        predict(X)
    est.coefs_, est.intercepts_ = [W.copy() for W in good[0]], [b.copy() for b in good[1]]
    est.coefs_[0] = np.zeros((X.shape[1], 7))  # does not chain to coefs_[1]
    with pytest.raises(ValueError):
        predict(X)
    est.coefs_, est.intercepts_ = [W.copy() for W in good[0]], [b.copy() for b in good[1]]
    est.intercepts_[0] = np.zeros(3)
    with pytest.raises(ValueError):
        predict(X)
    est.coefs_, est.intercepts_ = [W.copy() for W in good[0]], [b.copy() for b in good[1]]
    est.coefs_ = est.coefs_[:1]  # a layer missing
    with pytest.raises(ValueError):
        predict(X)
    # restoring good arrays makes it work again, as before
    est.coefs_, est.intercepts_ = [W.copy() for W in good[0]], [b.copy() for b in good[1]]
    assert_allclose(predict(X).astype(float).squeeze() if Est is MLPRegressor else
                    est.predict_proba(X), np_forward(est, X).squeeze(), rtol=1e-10,
                    atol=1e-13)


# =========================================================================================
# 18. verbose
# =========================================================================================


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_verbose_prints_one_line_per_epoch(solver, capsys):
    est = MLPClassifier(hidden_layer_sizes=(4,), solver=solver, max_iter=4, verbose=True,
                        random_state=0).fit(X_IRIS, Y_IRIS)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("Iteration")]
    assert len(lines) == est.n_iter_ == 4
    pattern = re.compile(r"^Iteration (\d+), loss = ([0-9.]+), time = [0-9.]+s, "
                         r"[0-9.]+ samples/s$")
    for i, (line, loss) in enumerate(zip(lines, est.loss_curve_), start=1):
        m = pattern.match(line)
        assert m, line
        assert int(m.group(1)) == i
        assert float(m.group(2)) == pytest.approx(loss, abs=1e-8)
    est.partial_fit(X_IRIS, Y_IRIS)
    assert "Iteration 1, loss =" in capsys.readouterr().out


def test_verbose_early_stopping_prints_validation_score(capsys):
    est = MLPClassifier(hidden_layer_sizes=(4,), max_iter=3, verbose=1,
                        early_stopping=True, random_state=0).fit(X_IRIS, Y_IRIS)
    out = capsys.readouterr().out
    assert out.count("Validation score:") == est.n_iter_ == 3


def test_not_verbose_prints_nothing(capsys):
    MLPClassifier(hidden_layer_sizes=(4,), max_iter=3, random_state=0).fit(X_IRIS, Y_IRIS)
    MLPClassifier(hidden_layer_sizes=(4,), solver="lbfgs", max_iter=3,
                  random_state=0).fit(X_IRIS, Y_IRIS)
    assert capsys.readouterr().out == ""


# =========================================================================================
# 19. Poisson loss
# =========================================================================================


def _poisson_data(n=200, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.uniform(-1, 1, size=(n, 3))
    y = rng.poisson(np.exp(0.5 + X @ np.array([0.8, -0.5, 0.3]))).astype(float)
    return X, y


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_poisson_matches_sklearn(solver):
    X, y = _poisson_data()
    est = MLPRegressor(loss="poisson", hidden_layer_sizes=(6,), solver=solver, max_iter=10,
                       batch_size=50, learning_rate_init=0.01, random_state=0)
    ref = sk_twin(est)
    est.fit(X, y)
    ref.fit(X, y)
    assert est.out_activation_ == ref.out_activation_ == "exp"
    if solver != "lbfgs":
        assert_allclose(est.loss_curve_, ref.loss_curve_, rtol=PARITY["rtol"])
    assert_allclose(est.loss_, ref.loss_, rtol=PARITY["rtol"])
    assert_layers_close(est, ref, **PARITY)
    pred = est.predict(X)
    assert (pred > 0).all()
    assert_allclose(pred, ref.predict(X), rtol=1e-6)


def test_poisson_fits_counts_and_rejects_negative_y():
    X, y = _poisson_data(n=300)
    est = MLPRegressor(loss="poisson", hidden_layer_sizes=(8,), solver="lbfgs",
                       max_iter=300, random_state=0).fit(X, y)
    pred = est.predict(X)
    assert (pred > 0).all()
    # better than predicting the mean, in Poisson deviance
    from sklearn.metrics import mean_poisson_deviance
    assert mean_poisson_deviance(y, pred) < 0.8 * mean_poisson_deviance(
        y, np.full_like(y, y.mean()))
    y_neg = y.copy()
    y_neg[0] = -1.0
    msg = "Some value(s) of y are negative which is not allowed for loss='poisson'."
    for solver in ("adam", "lbfgs"):
        with pytest.raises(ValueError, match=re.escape(msg)):
            MLPRegressor(loss="poisson", solver=solver).fit(X, y_neg)
    with pytest.raises(ValueError, match=re.escape(msg)):
        MLPRegressor(loss="poisson").partial_fit(X, y_neg)


def test_poisson_mlp_equals_glm():
    # sklearn's test_mlp_vs_poisson_glm_equivalent
    n = 100
    rng = np.random.default_rng(0)
    x = np.linspace(0, 1, n)
    y = rng.poisson(np.exp(x + 1))
    X = x.reshape(n, -1)
    glm = PoissonRegressor(alpha=0, tol=1e-7).fit(X, y)
    mlp = MLPRegressor(loss="poisson", hidden_layer_sizes=(1,), activation="identity",
                       alpha=0, solver="lbfgs", tol=1e-7,
                       random_state=np.random.RandomState(1)).fit(X, y)
    assert_allclose(mlp.predict(X), glm.predict(X), rtol=1e-4)
    sq = MLPRegressor(loss="squared_error", hidden_layer_sizes=(1,), activation="identity",
                      alpha=0, solver="lbfgs", tol=1e-7,
                      random_state=np.random.RandomState(1)).fit(X, y)
    assert not np.allclose(sq.predict(X), glm.predict(X), rtol=1e-4)


# =========================================================================================
# 20. fitted attributes: the same names, types and values as scikit-learn's
# =========================================================================================

PUBLIC_ATTRS = ["classes_", "loss_", "best_loss_", "loss_curve_", "validation_scores_",
                "best_validation_score_", "t_", "coefs_", "intercepts_",
                "n_features_in_", "n_iter_", "n_layers_", "n_outputs_",
                "out_activation_", "feature_names_in_"]


# fitted attributes of fastprop's own options (a stochastic solver's fit sets them)
OWN_ATTRS = {"validation_loss_curve_"}


def _fitted_attrs(est):
    """The public fitted attributes, fastprop's own ones apart."""
    return {k for k in vars(est) if k.endswith("_") and not k.startswith("_")} - OWN_ATTRS


def _assert_same_kind(name, got, expected, values=True):
    if not values:  # types, shapes and lengths only
        if isinstance(expected, list):
            assert isinstance(got, list) and len(got) == len(expected), name
            for i, (g, e) in enumerate(zip(got, expected)):
                _assert_same_kind(f"{name}[{i}]", g, e, values=False)
        elif isinstance(expected, np.ndarray):
            assert isinstance(got, np.ndarray), name
            assert got.dtype == expected.dtype and got.shape == expected.shape, name
        elif isinstance(expected, (float, np.floating)):
            assert isinstance(got, (float, np.floating)), name
        else:
            _assert_same_kind(name, got, expected)
        return
    if expected is None:
        assert got is None, name
    elif isinstance(expected, (bool, np.bool_)):
        assert isinstance(got, (bool, np.bool_)), name
    elif isinstance(expected, (int, np.integer)):
        assert isinstance(got, (int, np.integer)) and not isinstance(got, bool), name
        assert got == expected, name
    elif isinstance(expected, (float, np.floating)):
        assert isinstance(got, (float, np.floating)), (name, type(got))
        if np.isinf(expected):
            assert got == expected, name
        else:
            assert got == pytest.approx(expected, rel=PARITY["rtol"]), name
    elif isinstance(expected, str):
        assert isinstance(got, str) and got == expected, name
    elif isinstance(expected, np.ndarray):
        assert isinstance(got, np.ndarray), name
        assert got.dtype == expected.dtype and got.shape == expected.shape, name
        if np.issubdtype(expected.dtype, np.floating):
            assert_allclose(got, expected, rtol=PARITY["rtol"], atol=1e-9, err_msg=name)
        else:
            assert_array_equal(got, expected, err_msg=name)
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), name
        for i, (g, e) in enumerate(zip(got, expected)):
            _assert_same_kind(f"{name}[{i}]", g, e)
    else:  # pragma: no cover - a new attribute kind
        raise AssertionError(f"{name}: unexpected type {type(expected)}")


@pytest.mark.parametrize("early_stopping", [False, True])
@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
@pytest.mark.parametrize("Est,kind", [(MLPClassifier, "default"), (MLPClassifier, "binary"),
                                      (MLPRegressor, "default"),
                                      (MLPRegressor, "multioutput")])
def test_fitted_attributes_match_sklearn(Est, kind, solver, early_stopping):
    X, y = data_for(Est, kind)
    est = Est(hidden_layer_sizes=(5, 3), solver=solver, max_iter=6,
              early_stopping=early_stopping, random_state=0, alpha=0.0)
    ref = sk_twin(est)
    est.fit(X, y)
    ref.fit(X, y)
    assert _fitted_attrs(est) == _fitted_attrs(ref)
    for name in PUBLIC_ATTRS:
        assert hasattr(est, name) == hasattr(ref, name), name
        if not hasattr(ref, name):
            continue
        got, expected = getattr(est, name), getattr(ref, name)
        if kind == "multioutput" and solver == "lbfgs" and name in (
                "loss_", "coefs_", "intercepts_"):
            # scikit-learn's L-BFGS minimises its mean-over-outputs loss with the
            # gradient of the sum (inconsistent: a different line search); fastprop's
            # pair is consistent. Same types and shapes, values differ by design.
            _assert_same_kind(name, got, expected, values=False)
            continue
        if kind == "multioutput" and name in ("loss_", "best_loss_", "loss_curve_"):
            # the documented sum-over-outputs loss (see
            # test_multioutput_squared_error_reports_sum_over_outputs)
            expected = (None if expected is None else
                        [3 * v for v in expected] if isinstance(expected, list)
                        else 3 * expected)
        _assert_same_kind(name, got, expected)
    # the same after partial_fit (stochastic solvers, without early stopping)
    if solver != "lbfgs" and not early_stopping:
        est.partial_fit(X, y)
        ref.partial_fit(X, y)
        assert _fitted_attrs(est) == _fitted_attrs(ref)
        for name in ("t_", "n_iter_", "coefs_", "intercepts_"):
            _assert_same_kind(name, getattr(est, name), getattr(ref, name))


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_pickle_holds_parameters_once(solver):
    # coefs_ / intercepts_ are views of one flat vector: a pickle must not store the
    # parameters twice (flat vector + views), nor the training scratch buffers. What it
    # holds is what scikit-learn's holds (parameters, best parameters, optimizer state).
    est = MLPRegressor(hidden_layer_sizes=(500,), solver=solver, max_iter=2,
                       random_state=0)
    ref = sk_twin(est)
    est.fit(X_REG, Y_REG)
    ref.fit(X_REG, Y_REG)
    n_bytes = 8 * sum(a.size for a in layers(est))
    size, ref_size = len(pickle.dumps(est)), len(pickle.dumps(ref))
    assert size < ref_size + n_bytes / 4, (size, ref_size, n_bytes)
    restored = pickle.loads(pickle.dumps(est))
    assert_array_equal(restored.predict(X_REG), est.predict(X_REG))


def test_fastprop_package_exports():
    assert fastprop.MLPClassifier is MLPClassifier
    assert fastprop.MLPRegressor is MLPRegressor
    assert isinstance(fastprop.__version__, str)


def test_fit_on_largish_data_is_deterministic_across_refits():
    # threads (if any) in the compiled core must not make results depend on scheduling
    X, y = make_regression(n_samples=2000, n_features=30, random_state=0)
    y = scale(y)
    # batch 500 x 256 hidden units: above the size where the elementwise passes thread
    a = MLPRegressor(hidden_layer_sizes=(256,), max_iter=2, batch_size=500, random_state=0)
    results = [a.fit(X, y).coefs_[0].copy() for _ in range(3)]
    for r in results[1:]:
        assert_array_equal(r, results[0])
    preds = [a.predict(X) for _ in range(2)]
    assert_array_equal(preds[0], preds[1])
    ref = sk_twin(a).fit(X, y)
    assert_layers_close(a, ref, **PARITY)
    lb = MLPRegressor(hidden_layer_sizes=(64,), solver="lbfgs", max_iter=5, random_state=0)
    results = [lb.fit(X, y).coefs_[0].copy() for _ in range(2)]
    assert_array_equal(results[0], results[1])


@pytest.mark.parametrize("labels", [
    np.array([3, 1, 2, 1, 3, 3]),                 # multiclass int
    np.array(["b", "a", "b", "b", "a", "a"]),     # binary str
    np.array([True, False, True, True, False, True]),  # binary bool
    np.array(["x", "yy", "z", "x", "z", "yy"]),   # multiclass str
])
def test_partial_fit_label_fast_path_equals_label_binarizer(labels):
    """partial_fit's own label encoding gives exactly LabelBinarizer's targets, and
    hands anything it does not cover back to scikit-learn's path (same errors)."""
    from sklearn.preprocessing import LabelBinarizer

    X = np.arange(len(labels), dtype=float).reshape(-1, 1)
    est = MLPClassifier(hidden_layer_sizes=(3,), random_state=0)
    est.partial_fit(X, labels, classes=np.unique(labels))
    fast = est._encode_known_labels(labels)
    assert fast is not None
    expected = LabelBinarizer().fit(np.unique(labels)).transform(labels).astype(bool)
    assert fast.dtype == bool and np.array_equal(fast, expected)
    # a label outside classes_: no fast answer, scikit-learn's error
    other = np.array([labels[0]] * 2)
    other[1] = np.array(["w"]).astype(labels.dtype)[0] if labels.dtype.kind == "U" else 99
    if labels.dtype.kind != "b":
        assert est._encode_known_labels(other) is None
        with pytest.raises(ValueError, match="`y` has classes not in `self.classes_`"):
            est.partial_fit(X[:2], other)


# -- partial_fit's per-call validation: a fast path for plain float arrays --------------

@pytest.mark.parametrize("kind", ["classifier", "regressor"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_partial_fit_fast_validation_gives_the_scikit_learn_path_result(kind, dtype,
                                                                        monkeypatch):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 5)).astype(dtype)
    if kind == "classifier":
        y = rng.integers(0, 3, 90)
        a = fastprop.MLPClassifier(hidden_layer_sizes=(7,), batch_size=16, random_state=0)
        first = dict(classes=[0, 1, 2])
    else:
        y = rng.normal(size=90)
        a = fastprop.MLPRegressor(hidden_layer_sizes=(7,), batch_size=16, random_state=0)
        first = {}
    b = clone(a)
    a.partial_fit(X, y, **first)
    b.partial_fit(X, y, **first)
    calls = []
    real = fastprop._mlp.validate_data

    def spy(*args, **kwargs):
        calls.append(kwargs.get("reset"))
        return real(*args, **kwargs)

    monkeypatch.setattr(fastprop._mlp, "validate_data", spy)
    for _ in range(3):
        a.partial_fit(X, y)  # the fast path: scikit-learn's validate_data is not called
    assert calls == []
    monkeypatch.setattr(type(b), "_checked_fast", lambda self, X, y, defer=False: None)
    for _ in range(3):
        b.partial_fit(X, y)
    assert calls == [False] * 3
    for p, q in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        assert_array_equal(p, q)
    assert a.loss_ == b.loss_


# (hidden, batch_size): whole minibatches, split ones (128 rows and up), and whole ones
# cut by units (a big enough network)
DEFERRED_CHECK_PATHS = {"whole": ((9,), 32), "split": ((9,), 150), "units": ((600,), 100)}


@pytest.mark.parametrize("path", list(DEFERRED_CHECK_PATHS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
def test_partial_fit_checks_x_in_its_epoch_and_fails_as_scikit_learn(Est, dtype, path,
                                                                     monkeypatch):
    """partial_fit leaves X's values to its shuffled epoch, which checks every row as it
    gathers it: a NaN or infinity anywhere raises scikit-learn's own error and leaves
    the model (optimizer state and random state included) as it was."""
    hidden, batch = DEFERRED_CHECK_PATHS[path]
    rng = np.random.default_rng(7)
    X = rng.normal(size=(300, 20)).astype(dtype)
    y = rng.integers(0, 3, 300) if Est is MLPClassifier else rng.normal(size=300)
    first = dict(classes=[0, 1, 2]) if Est is MLPClassifier else {}
    kw = dict(hidden_layer_sizes=hidden, batch_size=batch)
    a = Est(random_state=np.random.RandomState(3), **kw).partial_fit(X, y, **first)
    b = Est(random_state=np.random.RandomState(3), **kw).partial_fit(X, y, **first)
    sk = SK[Est](random_state=0, **kw).partial_fit(X, y, **first)
    checks = []
    real = fastprop.core.Trainer.run_epoch

    def spy(self, *args, **kwargs):
        checks.append(kwargs.get("check_finite"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(fastprop.core.Trainer, "run_epoch", spy)
    for pos, (row, col) in enumerate([(0, 0), (299, 19), (123, 5), (200, 13)]):
        bad = X.copy()
        bad[row, col] = [np.nan, np.inf, -np.inf][pos % 3]
        with pytest.raises(ValueError) as ours:
            a.partial_fit(bad, y)
        with pytest.raises(ValueError) as theirs:
            sk.partial_fit(bad, y)
        assert str(ours.value) == str(theirs.value)
        assert not isinstance(ours.value, fastprop.core.NonFiniteRowsError)
    assert checks == [True] * 4  # the epoch ran, and found every one
    # the model is as if the failing calls had not been made: the same bits as its twin
    a.partial_fit(X, y)
    b.partial_fit(X, y)
    assert checks[-2:] == [True, True]
    assert_layers_equal(a, b)
    assert a.n_iter_ == b.n_iter_ and a.t_ == b.t_ and a.loss_ == b.loss_
    assert_array_equal(a._optimizer.state_2, b._optimizer.state_2)
    # another error beside the NaN: scikit-learn reports X's first
    bad = X.copy()
    bad[5, 5] = np.nan
    other = y[:-1] if Est is MLPRegressor else y + 7  # rows / unseen classes
    Xo = bad[:-1] if Est is MLPRegressor else bad
    with pytest.raises(ValueError) as ours:
        a.partial_fit(Xo, other)
    with pytest.raises(ValueError) as theirs:
        sk.partial_fit(Xo, other)
    assert str(ours.value) == str(theirs.value)


def test_partial_fit_casts_after_checking_the_data_it_was_given():
    """A float64 X on a float32 model is checked before the cast: NaN gets
    scikit-learn's error, and finite values beyond float32's range (which the cast
    would make infinite) a clear error naming the overflow; the model is untouched."""
    rng = np.random.default_rng(8)
    X = rng.normal(size=(60, 4))
    y = rng.normal(size=60)
    est = MLPRegressor(hidden_layer_sizes=(5,), batch_size=16, random_state=0)
    est.partial_fit(X.astype(np.float32), y)
    before = [a.copy() for a in est.coefs_ + est.intercepts_]
    huge = X.copy()
    huge[:, 0] = np.finfo(np.float64).max  # finite, its sum is not; inf in float32
    with pytest.raises(ValueError, match="X has values beyond float32's range"):
        est.partial_fit(huge, y)
    for a, b in zip(est.coefs_ + est.intercepts_, before):
        assert_array_equal(a, b)
    est = MLPRegressor(hidden_layer_sizes=(5,), batch_size=16, random_state=0)
    est.partial_fit(X.astype(np.float32), y)
    bad = X.copy()
    bad[7, 2] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        est.partial_fit(bad, y)


def _fitted_clf(X, y):
    return fastprop.MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, random_state=0).fit(X, y)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_partial_fit_fast_validation_leaves_the_unusual_to_scikit_learn():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 4))
    y = rng.integers(0, 2, 40)
    est = _fitted_clf(X, y)
    sk = skn.MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, random_state=0).fit(X, y)
    bad = X.copy()
    bad[3, 2] = np.nan
    huge = np.full_like(X, np.finfo(np.float64).max)  # finite, but its sum is not
    cases = {
        "nan": (bad, y, ValueError),
        "inf": (np.where(bad != bad, np.inf, bad), y, ValueError),
        "width": (X[:, :3], y, ValueError),
        "rows": (X, y[:-1], ValueError),
        "y nan": (X, np.where(np.arange(40) == 5, np.nan, y.astype(float)), ValueError),
    }
    for name, (Xc, yc, err) in cases.items():
        with pytest.raises(err) as ours:
            est.partial_fit(Xc, yc)
        with pytest.raises(err) as theirs:
            sk.partial_fit(Xc, yc)
        assert str(ours.value) == str(theirs.value), name
    # finite values whose sum overflows: left to scikit-learn's exact check, silently
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert est._checked_fast(huge, y) is None
        assert est._checked_fast(X, y) is not None
    # integer X is converted, as scikit-learn does
    est.partial_fit((X * 10).astype(np.int64), y)
    # a 2-D single-column y warns, as scikit-learn does
    from sklearn.exceptions import DataConversionWarning

    with pytest.warns(DataConversionWarning):
        est.partial_fit(X, y.reshape(-1, 1))
    # fitted with feature names, then an array: scikit-learn's warning
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(X, columns=list("abcd"))
    named = _fitted_clf(df, y)
    with pytest.warns(UserWarning, match="feature names"):
        named.partial_fit(X, y)


def test_regressor_partial_fit_fast_validation_rejects_what_scikit_learn_rejects():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(30, 3))
    y = rng.normal(size=30)
    est = fastprop.MLPRegressor(hidden_layer_sizes=(4,), random_state=0).partial_fit(X, y)
    sk = skn.MLPRegressor(hidden_layer_sizes=(4,), random_state=0).partial_fit(X, y)
    yc = np.where(np.arange(30) == 2, np.inf, y)
    with pytest.raises(ValueError) as ours:
        est.partial_fit(X, yc)
    with pytest.raises(ValueError) as theirs:
        sk.partial_fit(X, yc)
    assert str(ours.value) == str(theirs.value)
    # string targets: scikit-learn fails inside its loss (a numpy UFuncTypeError);
    # fastprop says it cannot make them numbers
    with pytest.raises(ValueError, match="could not convert string to float"):
        est.partial_fit(X, np.array(["a"] * 30))
    est.partial_fit(X, np.arange(30))  # integer targets: scikit-learn's path, accepted
