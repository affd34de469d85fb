"""The hidden activations fastprop adds to scikit-learn's four: 'leaky_relu', 'elu',
'softplus', 'gelu' and 'silu'.

Their formulas against an independent writing of them; the compiled core against the
reference and both against finite differences, for every loss, in float32 and float64,
dense and CSR X, odd shapes; training epochs of every partition against the NumPy loop
and bitwise across thread counts; the estimators; ONNX export; to_sklearn's refusal.
"""

import math
import pickle
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import InvalidParameterError

import fastprop.core as core
from fastprop import MLPClassifier, MLPRegressor, reference
from fastprop.core import _kernels

from .helpers import (
    DTYPES,
    FD32_TOL,
    FD_TOL,
    LOSSES,
    N_OUT,
    NumpyTrainer,
    REORDER_TOL,
    SOLVERS,
    _act,
    assert_epoch_close,
    assert_result_close,
    csr_split_from,
    fd_gradient,
    flat_grad,
    hidden_preactivations,
    flat_unpack,
    make_problem,
    np_forward,
    np_loss,
    seed_of,
    split_from,
    tol,
    units_from,
)

NEW = ("leaky_relu", "elu", "softplus", "gelu", "silu")
KEEPS_Z = ("gelu", "silu")
KINKED = ("leaky_relu", "elu")  # f' jumps (leaky_relu) or f'' jumps (elu) at 0


def indep_act(Z, name):
    """The activation from its formula, in float64 (tests/helpers.py)."""
    return _act(np.asarray(Z, dtype=np.float64), name)


def problem(loss, dtype, activation, sizes, n=9, seed=0, weighted=True, alpha=0.3,
            margin=None):
    """make_problem; with ``margin``, the activation's kinks are kept that far from every
    hidden pre-activation (so that finite differences do not cross one)."""
    for attempt in range(2000):
        p = make_problem(n_samples=n, sizes=sizes, activation=activation, loss=loss,
                         dtype=np.float64, seed=seed + 7919 * attempt, alpha=alpha,
                         weighted=weighted)
        Zs = hidden_preactivations(p.coefs, p.intercepts, p.X, activation)
        if (margin is None or activation not in KINKED or not Zs
                or min(np.abs(Z).min() for Z in Zs) >= margin):
            return p.astype(dtype)
    raise RuntimeError("no problem with the margin")


# =======================================================================================
# the formulas
# =======================================================================================

Z_GRID = np.concatenate([np.linspace(-8, 8, 161), [-1e3, -40.0, -1e-6, 1e-6, 40.0, 1e3]])


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("activation", NEW)
def test_activation_is_its_formula_and_finite(activation, dtype):
    Z = Z_GRID.astype(dtype)
    A = reference._activate(Z, activation)
    assert A.dtype == dtype and np.all(np.isfinite(A))
    t = tol(dtype)
    assert_allclose(A, indep_act(Z, activation), rtol=t["rtol"], atol=1e-300)
    # the compiled forward pass of a one-unit network, W = 1, b = 0: A = f(z)
    coefs = [np.ones((1, 1), dtype), np.ones((1, 1), dtype)]
    intercepts = [np.zeros(1, dtype), np.zeros(1, dtype)]
    got = core.forward(coefs, intercepts, Z[:, None], activation=activation,
                       loss="squared_error")[:, 0]
    assert_allclose(got, indep_act(Z, activation), rtol=t["rtol"], atol=1e-300)


def test_activation_values():
    z = np.array([-2.0, -0.5, 0.0, 0.5, 2.0])
    assert_allclose(reference._activate(z, "leaky_relu"), [-0.02, -0.005, 0, 0.5, 2])
    assert_allclose(reference._activate(z, "elu"), [math.exp(-2) - 1, math.exp(-.5) - 1, 0, .5, 2])
    assert_allclose(reference._activate(z, "softplus"), np.log1p(np.exp(z)))
    assert_allclose(reference._activate(z, "gelu"),
                    [0.5 * x * (1 + math.erf(x / math.sqrt(2))) for x in z], rtol=1e-15)
    assert_allclose(reference._activate(z, "silu"), z / (1 + np.exp(-z)), rtol=1e-15)
    # the stable forms at the extremes
    assert reference._activate(np.array([1000.0]), "softplus")[0] == 1000.0
    assert reference._activate(np.array([-1000.0]), "softplus")[0] == 0.0
    assert reference._activate(np.array([-1000.0]), "elu")[0] == -1.0
    assert reference._activate(np.array([-1000.0]), "silu")[0] == 0.0


@pytest.mark.parametrize("activation", NEW)
def test_derivative_is_the_derivative(activation):
    """f' (through A, or through Z for gelu and silu) against central differences of f,
    away from the kink at 0."""
    Z = np.linspace(-6, 6, 241)
    Z = Z[np.abs(Z) > 1e-3]
    A = reference._activate(Z, activation)
    d = reference._derivative(A, Z, activation)
    h = 1e-5
    fd = (indep_act(Z + h, activation) - indep_act(Z - h, activation)) / (2 * h)
    assert_allclose(d, fd, rtol=1e-7, atol=1e-9)


# =======================================================================================
# loss_and_gradients: core vs reference vs finite differences
# =======================================================================================

SHAPES = {"1h": (3, 5), "3h": (3, 4, 5, 3), "1feature": (1, 6)}


def _sizes(loss, hidden):
    return (*SHAPES[hidden], N_OUT[loss])


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("hidden", list(SHAPES))
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", NEW)
def test_core_matches_reference(activation, loss, hidden, dtype):
    p = problem(loss, dtype, activation, _sizes(loss, hidden),
                seed=seed_of("ref", activation, loss, hidden))
    ref = p.call(reference)
    got = p.call(core)
    t = tol(dtype)
    assert_result_close(got, ref, t["rtol"], t["atol_factor"], activation)
    for r, g in zip(ref[1] + ref[2], got[1] + got[2]):
        assert g.dtype == dtype and r.dtype == dtype
    # the reference's loss is the loss written independently
    assert_allclose(float(ref[0]), np_loss(*p.args(), **p.kwargs()),
                    rtol=1e-12 if dtype == np.float64 else 1e-5)


@pytest.mark.parametrize("hidden", ["1h", "3h"])
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", NEW)
def test_gradients_match_finite_differences(activation, loss, hidden):
    p = problem(loss, np.float64, activation, _sizes(loss, hidden),
                seed=seed_of("fd", activation, loss, hidden), margin=0.02)

    def f(flat):
        coefs, intercepts = flat_unpack(flat, p.sizes)
        return np_loss(coefs, intercepts, p.X, p.Y, activation, loss, p.alpha,
                          p.sample_weight)

    fd = fd_gradient(f, p.flat())
    for module in (reference, core):
        g = flat_grad(p.call(module))
        assert_allclose(g, fd, rtol=FD_TOL["rtol"],
                        atol=FD_TOL["atol_factor"] * np.abs(fd).max(), err_msg=module.__name__)
    # float32 core at the float32 point against float64 differences there
    p32 = p.astype(np.float32)
    point = p32.astype(np.float64)

    def f32(flat):
        coefs, intercepts = flat_unpack(flat, p.sizes)
        return np_loss(coefs, intercepts, point.X, point.Y, activation, loss, p.alpha,
                          point.sample_weight)

    fd32 = fd_gradient(f32, point.flat())
    g32 = flat_grad(p32.call(core))
    assert_allclose(g32, fd32, rtol=FD32_TOL["rtol"],
                    atol=FD32_TOL["atol_factor"] * np.abs(fd32).max())


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("activation", NEW)
def test_odd_shapes_and_layouts(activation, dtype):
    """One sample, one feature, non-contiguous and Fortran-ordered X: the core gives the
    reference's result for each."""
    t = tol(dtype)
    for loss in LOSSES:
        for n, sizes in ((1, (4, 3, N_OUT[loss])), (7, (1, 5, 4, N_OUT[loss]))):
            p = problem(loss, dtype, activation, sizes, n=n,
                        seed=seed_of("odd", activation, loss, n))
            ref = p.call(reference)
            assert_result_close(p.call(core), ref, t["rtol"], t["atol_factor"], f"{loss} {n}")
            wide = np.zeros((n, 2 * sizes[0]), dtype)
            wide[:, ::2] = p.X
            for X in (wide[:, ::2], np.asfortranarray(p.X)):
                assert not X.flags.c_contiguous or n == 1 or sizes[0] == 1
                got = core.loss_and_gradients(p.coefs, p.intercepts, X, p.Y, **p.kwargs())
                assert_result_close(got, ref, t["rtol"], t["atol_factor"], f"{loss} layout")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", NEW)
def test_csr_loss_gradient_equals_dense(activation, loss, dtype, monkeypatch):
    p = problem(loss, dtype, activation, (6, 5, 4, N_OUT[loss]), n=23,
                seed=seed_of("csr", activation, loss))
    rng = np.random.default_rng(1)
    p.X = np.ascontiguousarray(p.X * (rng.uniform(size=p.X.shape) < 0.4), dtype=dtype)
    p.X[2] = 0.0
    Xs = sp.csr_matrix(p.X)
    ref = p.call(reference)
    kw = dict(activation=activation, loss=loss, alpha=p.alpha, sample_weight=p.sample_weight)
    for block in (None, 4):  # one block, and blocks of 4 rows
        if block is not None:
            monkeypatch.setattr(core, "block_rows", lambda sizes, n_samples: block)
        for X in (p.X, Xs):
            f = core.LossGradient(p.sizes, X, p.Y, **kw)
            value, grad = f(p.flat().astype(dtype))
            t = tol(dtype)
            assert_allclose(value, float(ref[0]), rtol=t["rtol"])
            expect = flat_grad(ref)
            assert_allclose(grad, expect, rtol=t["rtol"],
                            atol=t["atol_factor"] * np.abs(expect).max())


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("activation", NEW)
def test_loss_gradient_halves(activation, dtype):
    """Blocks cut in halves (the L-BFGS pass with two threads' worth of rows): each half
    has its own workspace, Z region included."""
    p = problem("log_loss", dtype, activation, (5, 9, 7, 3), n=300,
                seed=seed_of("halves", activation))
    ref = p.call(reference)
    f = core.LossGradient(p.sizes, p.X, p.Y, activation=activation, loss="log_loss",
                          alpha=p.alpha, sample_weight=p.sample_weight)
    assert _kernels.split_rows(f.rows) > 0 and f.grads2.shape[0] > 0
    value, grad = f(p.flat().astype(dtype))
    t = tol(dtype)
    expect = flat_grad(ref)
    assert_allclose(value, float(ref[0]), rtol=t["rtol"])
    assert_allclose(grad, expect, rtol=t["rtol"], atol=t["atol_factor"] * np.abs(expect).max())


# =======================================================================================
# forward and input_gradients
# =======================================================================================

@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", NEW)
def test_forward_and_input_gradients(activation, loss, dtype):
    t = tol(dtype)
    for n, sizes in ((11, (4, 6, 5, N_OUT[loss])), (1, (1, 3, N_OUT[loss]))):
        p = problem(loss, dtype, activation, sizes, n=n, seed=seed_of("fw", activation, loss, n))
        kw = dict(activation=activation, loss=loss)
        P = reference.forward(p.coefs, p.intercepts, p.X, **kw)
        assert P.dtype == dtype
        assert_allclose(P, np_forward(p.coefs, p.intercepts, p.X, activation, loss),
                        rtol=t["rtol"], atol=t["atol_factor"] * np.abs(P).max())
        G = reference.input_gradients(p.coefs, p.intercepts, p.X, **kw)
        params = p.flat().astype(dtype)
        Xs = sp.csr_matrix(p.X)
        for X in (p.X, np.asfortranarray(p.X), Xs):
            got = (core.forward_flat(params, p.sizes, X, **kw) if sp.issparse(X)
                   else core.forward(p.coefs, p.intercepts, X, **kw))
            assert got.dtype == dtype
            assert_allclose(got, P, rtol=t["rtol"], atol=t["atol_factor"] * np.abs(P).max())
            got = (core.input_gradients_flat(params, p.sizes, X, **kw) if sp.issparse(X)
                   else core.input_gradients(p.coefs, p.intercepts, X, **kw))
            assert got.dtype == dtype and got.shape == G.shape
            assert_allclose(got, G, rtol=t["rtol"], atol=t["atol_factor"] * np.abs(G).max())
        if dtype == np.float64:
            # d P / d X against central differences of the independent forward pass
            h = 1e-5
            fd = np.empty_like(G)
            for j in range(sizes[0]):
                e = np.zeros(sizes[0])
                e[j] = h
                fd[:, :, j] = (np_forward(p.coefs, p.intercepts, p.X + e, activation, loss)
                               - np_forward(p.coefs, p.intercepts, p.X - e, activation,
                                               loss)) / (2 * h)
            assert_allclose(G, fd, rtol=1e-6, atol=1e-7 * np.abs(fd).max())


def test_workspaces_of_the_activations_that_keep_z():
    """gelu and silu need the Z region after the activations: a workspace sized for the
    others is refused, not overrun."""
    sizes = [3, 5, 4, 2]
    assert core.work_len(sizes, 10, "relu") == 10 * 11
    assert core.work_len(sizes, 10, "softplus") == 10 * 11
    assert core.work_len(sizes, 10, "gelu") == 10 * (11 + 9)
    assert core.work_len([3, 2], 10, "silu") == 10 * 2  # no hidden layer: no Z
    params = np.zeros(core.n_params(sizes))
    X = np.zeros((10, 3))
    out = np.empty((10, 2))
    for act in ("gelu", "silu"):
        with pytest.raises(ValueError, match="acts"):
            _kernels.forward(np.array(sizes, np.intp), core.ACTIVATION_CODES[act], 0,
                             params, X, out, np.empty(10 * 11), 10)
        _kernels.forward(np.array(sizes, np.intp), core.ACTIVATION_CODES[act], 0,
                         params, X, out, np.empty(10 * 20), 10)
    with pytest.raises(ValueError, match="activation"):
        _kernels.forward(np.array(sizes, np.intp), 9, 0, params, X, out,
                         np.empty(10 * 20), 10)
    # fastprop.core sizes every workspace as the kernels need it, for every activation
    assert set(core.ACTIVATION_CODES) == set(reference_activations())
    for act, code in core.ACTIVATION_CODES.items():
        for s in (sizes, [3, 2], [3, 4, 2]):
            n = core.work_len(s, 10, act)
            p = np.zeros(core.n_params(s))
            o = np.empty((10, s[-1]))
            _kernels.forward(np.array(s, np.intp), code, 0, p, X, o, np.empty(n), 10)
            with pytest.raises(ValueError, match="acts"):
                _kernels.forward(np.array(s, np.intp), code, 0, p, X, o, np.empty(n - 1), 10)


def reference_activations():
    from fastprop._validation import ACTIVATIONS

    return ACTIVATIONS


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("activation", NEW)
def test_large_inputs_stay_finite(activation, dtype):
    p = problem("binary_log_loss", dtype, activation, (3, 6, 5, 2), n=12, seed=5)
    X = (p.X * 300).astype(dtype)
    value, cg, ig = core.loss_and_gradients(p.coefs, p.intercepts, X, p.Y,
                                            activation=activation, loss="binary_log_loss")
    assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in cg + ig)
    ref = reference.loss_and_gradients(p.coefs, p.intercepts, X, p.Y,
                                       activation=activation, loss="binary_log_loss")
    t = tol(dtype)
    assert_result_close((value, cg, ig), ref, t["rtol"], t["atol_factor"])


# =======================================================================================
# training epochs: every partition, against the NumPy loop and across thread counts
# =======================================================================================

def _epochs(p, params, activation, solver, batch_size, X=None, n_epochs=2):
    trainer = core.Trainer(p.sizes, activation, p.loss, params.copy(), **SOLVERS[solver])
    order = np.random.default_rng(3).permutation(p.X.shape[0]).astype(np.intp)
    accs = [trainer.run_epoch(p.X if X is None else X, p.Y, batch_size=batch_size, alpha=1e-2,
                              sample_weight=p.sample_weight, order=order)
            for _ in range(n_epochs)]
    return trainer, accs


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("kind", ["whole", "rows", "units", "csr-rows"])
@pytest.mark.parametrize("activation", NEW)
def test_epochs_match_numpy_loop(activation, kind, dtype):
    """Two epochs in each partition against the NumPy loop over the reference; with the
    small shapes here the partition is forced through the kernels' hooks."""
    loss = "log_loss"
    p = problem(loss, dtype, activation, (20, 40, 33, 3), n=61, seed=seed_of("ep", activation))
    params = p.flat().astype(dtype)
    sizes = np.array(p.sizes, np.intp)
    X = core.csr_parts(sp.csr_matrix(p.X)) if kind == "csr-rows" else None
    setting = {"whole": units_from(1 << 62), "rows": split_from(2), "units": units_from(1),
               "csr-rows": split_from(2)}[kind]
    with setting:
        if kind == "csr-rows":
            part = _kernels.epoch_partition(sizes, 20, X[0].shape[0], 61)
        else:
            part = _kernels.epoch_partition(sizes, 20)
        assert part[0] == kind.replace("csr-", ""), part
        for solver in ("adam", "sgd-nesterov"):
            trainer, accs = _epochs(p, params, activation, solver, 20, X)
            expect = NumpyTrainer(p.sizes, activation, loss, params.copy(), **SOLVERS[solver])
            order = np.random.default_rng(3).permutation(61).astype(np.intp)
            accs_e = [expect.run_epoch(p.X, p.Y, batch_size=20, alpha=1e-2,
                                       sample_weight=p.sample_weight, order=order)
                      for _ in range(2)]
            assert_epoch_close(trainer.params, expect.params, dtype, f"{kind} {solver}")
            assert_allclose(accs, accs_e, rtol=1e-4 if dtype == np.float32 else 1e-9)
            assert not np.array_equal(trainer.params, params)


# shapes whose production partition is each kind (checked below)
PRODUCTION = {"whole": ((50, 64, 3), 32), "rows": ((50, 128, 64, 3), 256),
              "units": ((300, 512, 3), 32)}


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("kind", list(PRODUCTION))
@pytest.mark.parametrize("activation", ["gelu", "leaky_relu", "silu", "softplus", "elu"])
def test_epochs_are_bitwise_the_same_for_any_thread_count(activation, kind, dtype):
    from threadpoolctl import threadpool_limits

    sizes, batch = PRODUCTION[kind]
    assert _kernels.epoch_partition(np.array(sizes, np.intp), batch)[0] == kind
    p = problem("log_loss", dtype, activation, sizes, n=700, seed=seed_of("bits", kind),
                alpha=0.0)
    params = p.flat().astype(dtype)
    runs = []
    for nt in (1, 2, 3):
        with threadpool_limits(limits=nt):
            trainer, accs = _epochs(p, params, activation, "adam", batch)
        runs.append((accs, trainer.params, trainer.state_1, trainer.state_2))
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(runs[0][1], params)


# =======================================================================================
# the estimators
# =======================================================================================

def _data(dtype=np.float64, n=120):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 5)).astype(dtype)
    y = (X[:, 0] + X[:, 1] ** 2 > 0.5).astype(int) + (X[:, 2] > 1)
    return X, y


@pytest.mark.parametrize("activation", NEW)
def test_estimators_fit_predict_partial_fit_warm_start_pickle(activation):
    X, y = _data()
    kw = dict(hidden_layer_sizes=(8, 6), activation=activation, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for solver in ("adam", "sgd", "lbfgs"):
            clf = MLPClassifier(solver=solver, max_iter=200, batch_size=20,
                                learning_rate_init=0.02, **kw).fit(X, y)
            assert clf.score(X, y) > 0.75, (solver, clf.score(X, y))
            assert np.all(np.isfinite(clf.predict_proba(X)))
        reg = MLPRegressor(max_iter=100, learning_rate_init=0.02, **kw).fit(
            X, X[:, 0] - X[:, 1])
        assert reg.score(X, X[:, 0] - X[:, 1]) > 0.5
        # predict is the reference forward pass
        P = reference.forward([np.asarray(W) for W in reg.coefs_], list(reg.intercepts_), X,
                              activation=activation, loss="squared_error")
        assert_allclose(reg.predict(X), P[:, 0], rtol=1e-10, atol=1e-12)
        # pickle: same predictions, and training goes on the same
        clf = MLPClassifier(max_iter=5, **kw).fit(X, y)
        clone = pickle.loads(pickle.dumps(clf))
        assert_array_equal(clone.predict_proba(X), clf.predict_proba(X))
        clf.partial_fit(X, y)
        clone.partial_fit(X, y)
        assert_array_equal(clone.predict_proba(X), clf.predict_proba(X))
        # warm_start: two fits of 3 epochs are one of 6 (plain SGD: no optimizer state,
        # which a new fit resets; no shuffle; a constant rate)
        sgd = dict(solver="sgd", momentum=0.0, shuffle=False, tol=0, **kw)
        a = MLPClassifier(max_iter=3, warm_start=True, **sgd)
        a.fit(X, y).fit(X, y)
        b = MLPClassifier(max_iter=6, **sgd).fit(X, y)
        for u, v in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
            assert_allclose(u, v, rtol=1e-12, atol=1e-14)
        # partial_fit from scratch
        c = MLPClassifier(**kw)
        for _ in range(3):
            c.partial_fit(X, y, classes=np.unique(y))
        assert c.t_ == 3 * len(X)  # as scikit-learn counts: n_iter_ stays 1
        # float32 and sparse X
        c32 = MLPClassifier(max_iter=5, **kw).fit(X.astype(np.float32), y)
        assert c32.coefs_[0].dtype == np.float32
        cs = MLPClassifier(max_iter=5, **kw).fit(sp.csr_matrix(X), y)
        assert_allclose(cs.predict_proba(X), MLPClassifier(max_iter=5, **kw).fit(X, y)
                        .predict_proba(X), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("activation", NEW)
def test_lbfgs_matches_reference_gradients(activation):
    """The L-BFGS objective the estimator minimises is the reference's loss and
    gradient (its first iterate's loss)."""
    X, y = _data(n=80)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = MLPRegressor(solver="lbfgs", hidden_layer_sizes=(7,), activation=activation,
                           max_iter=30, random_state=0, alpha=1e-3).fit(X, X[:, 0])
    assert est.loss_ < 0.5 * np.var(X[:, 0])
    coefs = [np.asarray(W) for W in est.coefs_]
    value, _, _ = reference.loss_and_gradients(
        coefs, list(est.intercepts_), X, X[:, :1], activation=activation,
        loss="squared_error", alpha=1e-3)
    assert_allclose(float(value), est.loss_, rtol=1e-8)


def test_glorot_factor_is_six_for_the_new_activations():
    """Initial weights: the new activations draw what 'relu' draws (factor 6); only
    'logistic' uses 2."""
    X, y = _data()
    init = {}
    for act in ("relu", "logistic", *NEW):
        est = MLPClassifier(hidden_layer_sizes=(8,), activation=act, random_state=0,
                            solver="sgd", learning_rate_init=1e-300, max_iter=1, tol=0,
                            momentum=0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(X, y)
        init[act] = [np.asarray(W).copy() for W in est.coefs_]
    for act in NEW:
        for a, b in zip(init[act], init["relu"]):
            assert_allclose(a, b, rtol=1e-12)
    assert not np.allclose(init["logistic"][0], init["relu"][0])


def test_invalid_activation_is_refused():
    X, y = _data()
    with pytest.raises(InvalidParameterError, match="activation"):
        MLPClassifier(activation="swish").fit(X, y)
    with pytest.raises(ValueError, match="activation must be one of"):
        core.loss_and_gradients([np.ones((2, 1))], [np.zeros(1)], np.ones((3, 2)),
                                np.ones((3, 1)), activation="GELU", loss="squared_error")


@pytest.mark.parametrize("activation", NEW)
def test_to_sklearn_refuses_the_new_activations(activation):
    X, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = MLPClassifier(hidden_layer_sizes=(4,), activation=activation, max_iter=2,
                            random_state=0).fit(X, y)
    with pytest.raises(ValueError, match=f"activation='{activation}' has no equivalent"):
        est.to_sklearn()


# =======================================================================================
# ONNX export
# =======================================================================================

ONNX_KINDS = ["binary", "multiclass", "multilabel", "regression", "poisson"]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("kind", ONNX_KINDS)
@pytest.mark.parametrize("activation", NEW)
def test_onnx_graph_computes_what_the_model_predicts(activation, kind, dtype):
    fo = pytest.importorskip("fastprop.onnx")
    onnx = pytest.importorskip("onnx")
    from .test_interop import TOL, fitted, predicted

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est, X = fitted(kind, dtype, activation=activation)
    onx = fo.to_onnx(est, X[:1])
    ops = {node.op_type for node in onx.graph.node}
    assert "MLPClassifier" not in str(ops)
    if dtype == np.float64 and activation == "gelu":
        # onnxruntime's CPU provider has no double Erf: run ONNX's reference runtime,
        # with an Erf in double (its own computes in float)
        from onnx.reference import ReferenceEvaluator
        from onnx.reference.ops._op import OpRunUnaryNum
        from scipy.special import erf

        class Erf(OpRunUnaryNum):
            def _run(self, x):
                return (erf(x).astype(x.dtype),)

        out = ReferenceEvaluator(onx, new_ops=[Erf]).run(None, {onx.graph.input[0].name: X})
    else:
        ort = pytest.importorskip("onnxruntime")
        sess = ort.InferenceSession(onx.SerializeToString(),
                                    providers=["CPUExecutionProvider"])
        out = sess.run(None, {sess.get_inputs()[0].name: X})
    labels, values = predicted(est, X)
    if labels is not None:
        assert_array_equal(np.asarray(out[0]), labels)
        got = out[1]
    else:
        got = out[0]
    got = np.asarray(got)
    assert got.dtype == dtype and got.shape == values.shape
    assert_allclose(got, values, rtol=TOL[dtype], atol=TOL[dtype] * np.abs(values).max())
