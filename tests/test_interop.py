"""Interop and inspection: input gradients, exchange with scikit-learn's MLPs, the
base class's predict, and ONNX export run by onnxruntime."""

import pickle
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose, assert_array_equal
from sklearn import neural_network as skn
from sklearn.datasets import load_iris, make_multilabel_classification, make_regression
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import fastprop.core as core
from fastprop import MLPClassifier, MLPEstimator, MLPRegressor, reference

from .helpers import ACTIVATIONS, DTYPES, LOSSES, fd_gradient, make_network

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


# =======================================================================================
# data and models
# =======================================================================================

def _iris(dtype=np.float64):
    X, y = load_iris(return_X_y=True)
    return ((X - X.mean(0)) / X.std(0)).astype(dtype), y


def _multilabel(dtype=np.float64):
    X, Y = make_multilabel_classification(200, 6, n_classes=3, random_state=0)
    return ((X - X.mean(0)) / X.std(0)).astype(dtype), Y


def _regression(dtype=np.float64, n_targets=1):
    X, y = make_regression(200, 5, n_targets=n_targets, random_state=0)
    return X.astype(dtype), y / y.std()


def fitted(kind, dtype=np.float64, activation="relu", solver="adam", **params):
    """A small fitted model of each kind the estimators support."""
    kw = dict(hidden_layer_sizes=(7, 5), activation=activation, solver=solver,
              max_iter=60, random_state=0, **params)
    if kind == "binary":
        X, y = _iris(dtype)
        return MLPClassifier(**kw).fit(X, y == 1), X
    if kind == "multiclass":
        X, y = _iris(dtype)
        return MLPClassifier(**kw).fit(X, y), X
    if kind == "strings":
        X, y = _iris(dtype)
        return MLPClassifier(**kw).fit(X, np.array(["setosa", "versi", "virgi"])[y]), X
    if kind == "multilabel":
        X, Y = _multilabel(dtype)
        return MLPClassifier(**kw).fit(X, Y), X
    if kind == "regression":
        X, y = _regression(dtype)
        return MLPRegressor(**kw).fit(X, y), X
    if kind == "multioutput":
        X, y = _regression(dtype, n_targets=3)
        return MLPRegressor(**kw).fit(X, y), X
    if kind == "poisson":
        X, y = _regression(dtype)
        return MLPRegressor(loss="poisson", **kw).fit(X, np.abs(y)), X
    raise ValueError(kind)


KINDS = ["binary", "multiclass", "strings", "multilabel", "regression", "multioutput",
         "poisson"]
TOL = {np.float64: 1e-9, np.float32: 1e-4}


def predicted(est, X):
    """What the graph and the scikit-learn twin must reproduce: classes and
    probabilities, or values as 2-D."""
    if isinstance(est, MLPClassifier):
        return est.predict(X), est.predict_proba(X)
    return None, est.predict(X).reshape(X.shape[0], -1)


# =======================================================================================
# 1. gradients with respect to the inputs
# =======================================================================================

def _network(sizes, dtype, seed=0):
    return make_network(sizes, dtype, seed=seed)


# softmax (log_loss) needs two outputs or more
NETWORKS = [(sizes, loss) for sizes in ([5, 7, 4, 3], [1, 1], [4, 3], [3, 9, 1])
            for loss in LOSSES if not (loss == "log_loss" and sizes[-1] < 2)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("sizes,loss", NETWORKS)
def test_core_input_gradients_match_the_reference(sizes, loss, activation, dtype):
    coefs, intercepts = _network(sizes, dtype)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(37, sizes[0])).astype(dtype)
    want = reference.input_gradients(coefs, intercepts, X, activation=activation,
                                     loss=loss)
    got = core.input_gradients(coefs, intercepts, X, activation=activation, loss=loss)
    assert got.shape == (37, sizes[-1], sizes[0]) and got.dtype == dtype
    scale = max(np.abs(want).max(), 1e-30)
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", ["identity", "logistic", "tanh"])
def test_reference_input_gradients_match_finite_differences(activation, loss):
    """Smooth activations (relu's kinks are covered by the estimator test below, away
    from them): every d P[i, k] / d X[i, j] against 4th-order central differences."""
    sizes = [4, 6, 5, 3]
    coefs, intercepts = _network(sizes, np.float64, seed=3)
    X = np.random.default_rng(2).normal(size=(3, 4))
    G = reference.input_gradients(coefs, intercepts, X, activation=activation, loss=loss)
    for i in range(X.shape[0]):
        for k in range(sizes[-1]):
            def f(x, i=i, k=k):
                return reference.forward(coefs, intercepts, x.reshape(1, -1),
                                         activation=activation, loss=loss)[0, k]
            assert_allclose(G[i, k], fd_gradient(f, X[i]), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", DTYPES)
def test_core_input_gradients_in_blocks_and_on_odd_layouts(dtype):
    """More rows than one block holds, one sample, one feature, Fortran order and
    non-contiguous X, and sparse X: the same gradients as the reference."""
    sizes = [300, 4000, 2]
    coefs, intercepts = _network(sizes, dtype)
    X = np.random.default_rng(0).normal(size=(600, 300)).astype(dtype)
    want = reference.input_gradients(coefs, intercepts, X, activation="tanh",
                                     loss="log_loss")
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    atol = rtol * np.abs(want).max()
    assert core.block_rows(sizes, 600) < 600  # several blocks
    for Xv in (X, np.asfortranarray(X), X[:1]):
        got = core.input_gradients(coefs, intercepts, Xv, activation="tanh",
                                   loss="log_loss")
        assert_allclose(got, want[:Xv.shape[0]], rtol=rtol, atol=atol)
    flat = core.pack(coefs, intercepts)
    got = core.input_gradients_flat(flat, sizes, sp.csr_matrix(X), activation="tanh",
                                    loss="log_loss")
    assert_allclose(got, want, rtol=rtol, atol=atol)
    one = [np.ones((1, 1), dtype), np.ones((1, 1), dtype)], [np.zeros(1, dtype)] * 2
    Xs = np.arange(6, dtype=dtype).reshape(6, 1)[::2]
    assert_allclose(core.input_gradients(*one, Xs, activation="relu", loss="squared_error"),
                    reference.input_gradients(*one, Xs, activation="relu",
                                              loss="squared_error"))


def test_input_grad_kernel_checks_before_it_runs():
    sizes = np.array([3, 4, 2], dtype=np.intp)
    params = np.zeros(core.n_params([3, 4, 2]))
    X = np.zeros((5, 3))
    ok = dict(out=np.empty((5, 2, 3)), acts=np.empty(5 * 6), deltas=np.empty(5 * 6),
              colsum=np.empty(4))
    core._kernels.input_grad(sizes, 0, 0, params, X, *ok.values(), 5)
    for name, bad in [("out", np.empty((5, 3, 3))), ("acts", np.empty(5)),
                      ("deltas", np.empty(5)), ("colsum", np.empty(1))]:
        args = {**ok, name: bad}
        with pytest.raises(ValueError):
            core._kernels.input_grad(sizes, 0, 0, params, X, *args.values(), 5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_estimator_input_gradients_are_the_derivatives_of_its_predictions(kind, dtype):
    """``input_gradients`` differentiates ``predict`` (regressors, after the output
    activation) or ``predict_proba``'s columns (classifiers, two for a binary model),
    checked against central differences of those functions in float64."""
    est, X = fitted(kind, dtype, activation="tanh")
    X = X[:6]
    G = est.input_gradients(X)
    n_out = est.predict_proba(X[:1]).shape[1] if isinstance(est, MLPClassifier) else \
        est.n_outputs_
    assert G.shape == (6, n_out, X.shape[1]) and G.dtype == dtype
    est64 = MLPClassifier() if isinstance(est, MLPClassifier) else MLPRegressor()
    est64.__dict__.update(est.__dict__)
    est64._set_flat(est._flat.astype(np.float64), est._layer_units())
    f = est64.predict_proba if isinstance(est, MLPClassifier) else est64.predict

    def out(x):
        return np.asarray(f(x)).reshape(x.shape[0], -1)

    h = 1e-5
    fd = np.empty(G.shape)
    X64 = X.astype(np.float64)
    for j in range(X.shape[1]):
        E = np.zeros_like(X64)
        E[:, j] = h
        fd[:, :, j] = (out(X64 + E) - out(X64 - E)) / (2 * h)
    rtol = 1e-6 if dtype == np.float64 else 2e-3
    assert_allclose(G, fd, rtol=rtol, atol=rtol * np.abs(fd).max())


def test_input_gradients_on_sparse_input_and_errors():
    est, X = fitted("multiclass")
    assert_allclose(est.input_gradients(sp.csr_matrix(X)), est.input_gradients(X),
                    rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="features"):
        est.input_gradients(X[:, :2])
    with pytest.raises(NotFittedError):
        MLPRegressor().input_gradients(X)


def test_input_gradients_release_the_gil():
    """The kernel runs in ``with nogil``: a thread computing input gradients lets
    another thread's Python code run meanwhile."""
    import threading
    import time

    est, X = fitted("multiclass")
    Xbig = np.repeat(X, 400, axis=0)
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    t = threading.Thread(target=ticker)
    t.start()
    time.sleep(0.01)
    before = len(ticks)
    est.input_gradients(Xbig)
    during = len(ticks) - before
    stop.set()
    t.join()
    assert during > 0


# =======================================================================================
# 2. exchange with scikit-learn
# =======================================================================================

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_to_sklearn_predicts_the_same(kind, dtype, solver):
    est, X = fitted(kind, dtype, solver=solver)
    sk = est.to_sklearn()
    assert type(sk) is (skn.MLPClassifier if isinstance(est, MLPClassifier)
                        else skn.MLPRegressor)
    assert sk.get_params() == {k: v for k, v in est.get_params().items()
                               if k in sk.get_params()}
    labels, values = predicted(est, X)
    if labels is not None:
        assert_array_equal(sk.predict(X), labels)
        got = sk.predict_proba(X)
    else:
        got = sk.predict(X).reshape(X.shape[0], -1)
    assert_allclose(got, values, rtol=TOL[dtype], atol=TOL[dtype])
    # the fastprop model is untouched, and the two share no arrays
    sk.coefs_[0][...] = 0
    assert np.abs(est.coefs_[0]).max() > 0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_round_trips_train_on_as_the_other_library_does(kind, solver):
    """float64, where both libraries compute the same steps: a model handed over trains
    on (``partial_fit``, optimizer state included) as the original does in its own
    library, and handing it back gives the same model again."""
    est, X = fitted(kind, solver=solver, batch_size=32)
    y = _targets_of(kind)
    # fastprop -> scikit-learn: one more epoch on each side
    sk = est.to_sklearn()
    twin = MLPClassifier.from_sklearn(sk) if isinstance(est, MLPClassifier) else \
        MLPRegressor.from_sklearn(sk)
    for layer_a, layer_b in zip(twin.coefs_ + twin.intercepts_, est.coefs_ + est.intercepts_):
        assert_array_equal(layer_a, layer_b)
    assert_array_equal(twin._optimizer.state_1, est._optimizer.state_1)
    assert_array_equal(twin._optimizer.state_2, est._optimizer.state_2)
    assert_array_equal(twin._optimizer.counter, est._optimizer.counter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk.partial_fit(X, y)
        est.partial_fit(X, y)
    for a, b in zip(sk.coefs_ + sk.intercepts_, est.coefs_ + est.intercepts_):
        assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    assert sk.n_iter_ == est.n_iter_ and sk.t_ == est.t_
    if kind != "multioutput":  # scikit-learn reports the mean over outputs (its #8349)
        assert sk.loss_curve_ == pytest.approx(est.loss_curve_, rel=1e-9)


def _targets_of(kind):
    if kind in ("binary", "multiclass", "strings"):
        _, y = _iris()
        return {"binary": y == 1, "multiclass": y,
                "strings": np.array(["setosa", "versi", "virgi"])[y]}[kind]
    if kind == "multilabel":
        return _multilabel()[1]
    if kind == "multioutput":
        return _regression(n_targets=3)[1]
    y = _regression()[1]
    return np.abs(y) if kind == "poisson" else y


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_from_sklearn_predicts_the_same_and_trains_on(kind, dtype, solver):
    est, X = fitted(kind, dtype, solver=solver)
    y = _targets_of(kind)
    sk_cls = skn.MLPClassifier if isinstance(est, MLPClassifier) else skn.MLPRegressor
    params = {k: v for k, v in est.get_params().items() if k in sk_cls().get_params()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = sk_cls(**params).fit(X, y)
    ours = type(est).from_sklearn(sk)
    assert isinstance(ours, type(est)) and ours.coefs_[0].dtype == sk.coefs_[0].dtype
    labels, values = predicted(ours, X)
    if labels is not None:
        assert_array_equal(labels, sk.predict(X))
        want = sk.predict_proba(X)
    else:
        want = sk.predict(X).reshape(X.shape[0], -1)
    assert_allclose(values, want, rtol=TOL[dtype], atol=TOL[dtype])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if solver != "lbfgs":
            ours.partial_fit(X, y)
        ours.set_params(warm_start=True, max_iter=3).fit(X, y)
    assert np.isfinite(ours.coefs_[0]).all()
    pickle.loads(pickle.dumps(ours)).predict(X)


def test_exchange_errors_name_what_cannot_cross():
    est, X = fitted("multiclass")
    with pytest.raises(TypeError, match="MLPClassifier"):
        MLPClassifier.from_sklearn(skn.MLPRegressor())
    with pytest.raises(NotFittedError):
        MLPClassifier.from_sklearn(skn.MLPClassifier())
    with pytest.raises(NotFittedError):
        MLPClassifier().to_sklearn()
    # a setting only fastprop has (set past the parameter validation)
    est.activation = "not-in-sklearn"
    with pytest.raises(ValueError, match="activation='not-in-sklearn'"):
        est.to_sklearn()
    est.activation = "relu"
    est.solver = "rmsprop-like"
    with pytest.raises(ValueError, match="solver='rmsprop-like'"):
        est.to_sklearn()


# =======================================================================================
# 4. the base class carries predict
# =======================================================================================

def test_mlpestimator_carries_fit_partial_fit_and_predict():
    for name in ("fit", "partial_fit", "predict", "input_gradients", "to_sklearn",
                 "from_sklearn"):
        assert name in vars(MLPEstimator), name
    for cls in (MLPClassifier, MLPRegressor):
        assert "predict" not in vars(cls)
        assert "_prediction_from_output" in vars(cls)
    est, X = fitted("strings")
    assert set(est.predict(X)) <= set(est.classes_)
    reg, Xr = fitted("multioutput")
    assert reg.predict(Xr).shape == (Xr.shape[0], 3)


# =======================================================================================
# 1. ONNX export, run by onnxruntime
# =======================================================================================

def _onnx_run(onx, X):
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: X})


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("kind", KINDS)
def test_onnx_graph_computes_what_the_model_predicts(kind, activation, dtype):
    fo = pytest.importorskip("fastprop.onnx")
    onnx = pytest.importorskip("onnx")
    est, X = fitted(kind, dtype, activation=activation)
    onx = fo.to_onnx(est, X[:1])
    assert isinstance(onx, onnx.ModelProto)
    elem = onnx.TensorProto.DOUBLE if dtype == np.float64 else onnx.TensorProto.FLOAT
    assert onx.graph.input[0].type.tensor_type.elem_type == elem
    out = _onnx_run(onx, X)
    labels, values = predicted(est, X)
    if labels is not None:
        assert_array_equal(np.asarray(out[0]), labels)
        got = out[1]
    else:
        got = out[0]
    assert got.dtype == dtype and got.shape == values.shape
    assert_allclose(got, values, rtol=TOL[dtype], atol=TOL[dtype] * np.abs(values).max())


@pytest.mark.parametrize("dtype", DTYPES)
def test_onnx_classifier_options(dtype):
    fo = pytest.importorskip("fastprop.onnx")
    est, X = fitted("multiclass", dtype)
    proba = est.predict_proba(X)
    label, probs = _onnx_run(fo.to_onnx(est, X[:1]), X)  # zipmap off by default
    assert isinstance(probs, np.ndarray)
    label, maps = _onnx_run(fo.to_onnx(est, X[:1], zipmap=True), X)
    assert_array_equal(label, est.predict(X))
    assert_allclose([[m[c] for c in est.classes_] for m in maps], proba, rtol=1e-5,
                    atol=1e-6)  # ZipMap carries float32
    columns = _onnx_run(fo.to_onnx(est, X[:1], zipmap="columns"), X)
    assert_allclose(np.stack(columns[1:], axis=1), proba, rtol=1e-5, atol=1e-6)
    label, _ = _onnx_run(fo.to_onnx(est, X[:1], nocl=True), X)
    assert_array_equal(label, np.searchsorted(est.classes_, est.predict(X)))
    out = _onnx_run(fo.to_onnx(est, X[:1], output_class_labels=True), X)
    assert_array_equal(out[2], est.classes_)


@pytest.mark.parametrize("dtype", DTYPES)
def test_skl2onnx_converts_fastprop_models_and_pipelines(dtype):
    """Importing fastprop.onnx registers fastprop's estimators with skl2onnx, so that
    its own ``to_onnx`` converts them inside pipelines too."""
    fo = pytest.importorskip("fastprop.onnx")
    skl2onnx = pytest.importorskip("skl2onnx")
    X, y = load_iris(return_X_y=True)
    X = X.astype(dtype)
    pipe = make_pipeline(StandardScaler(), MLPClassifier((8,), max_iter=80,
                                                         random_state=0)).fit(X, y)
    label, probs = _onnx_run(fo.to_onnx(pipe, X[:1]), X)
    assert_array_equal(label, pipe.predict(X))
    assert_allclose(probs, pipe.predict_proba(X), rtol=1e-4, atol=1e-5)
    # skl2onnx's own entry point, with its pipeline default (ZipMap), float64 included
    label, maps = _onnx_run(skl2onnx.to_onnx(pipe, X[:1]), X)
    assert_array_equal(label, pipe.predict(X))
    reg = make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(8,),
                                                       max_iter=80, random_state=0))
    Xr, Yr = _regression(dtype, n_targets=2)
    reg.fit(Xr, Yr)
    (values,) = _onnx_run(skl2onnx.to_onnx(reg, Xr[:1]), Xr)
    assert values.shape == (Xr.shape[0], 2)
    assert_allclose(values, reg.predict(Xr), rtol=1e-4, atol=1e-4 * np.abs(Yr).max())


def test_fastprop_never_imports_the_onnx_packages_by_itself():
    """skl2onnx and onnxruntime are optional: training, predicting, input gradients and
    the exchange with scikit-learn run without importing them."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from fastprop import MLPClassifier\n"
        "X = np.random.default_rng(0).normal(size=(50, 3)); y = (X[:, 0] > 0).astype(int)\n"
        "m = MLPClassifier((4,), max_iter=5).fit(X, y)\n"
        "m.predict(X); m.input_gradients(X); m.to_sklearn()\n"
        "bad = [n for n in ('skl2onnx', 'onnxruntime', 'onnx') if n in sys.modules]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", code],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
