"""solver='rmsprop' and solver='adamw': the steps against their formulas, the compiled
steps and epochs against the reference, and the estimators (first step of every solver
computed by hand from the reference gradient, partial_fit, warm_start, pickling,
parameter validation, AdamW's loss without an L2 term)."""

import pickle
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.utils._param_validation import InvalidParameterError

import fastprop.core as core
from fastprop import MLPClassifier, MLPRegressor, reference
from fastprop.core import _kernels

from .helpers import (
    DTYPES,
    EPOCH_TOL,
    LOSSES,
    assert_epoch_close,
    NumpyTrainer,
    csr_split_from,
    seed_of,
    split_from,
    trainer_problem,
    units_from,
)

NEW = {
    "rmsprop": dict(solver="rmsprop", learning_rate=0.01, rho=0.8, epsilon=1e-6),
    "adamw": dict(solver="adamw", learning_rate=0.01, beta_1=0.8, beta_2=0.99,
                  epsilon=1e-6, weight_decay=0.5),
}


# =======================================================================================
# the flat-vector steps: compiled vs reference vs the formula
# =======================================================================================


@pytest.mark.parametrize("n", [1, 7, 1003])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("rho", [0.0, 0.9])
def test_rmsprop_update(rho, dtype, n):
    rng = np.random.default_rng(seed_of("rmsprop", rho, n))
    params = rng.normal(size=n).astype(dtype)
    hyper = dict(learning_rate=0.01, rho=rho, epsilon=1e-3)
    p_core, p_ref, v_core, v_ref = params.copy(), params.copy(), np.zeros(n, dtype), np.zeros(n, dtype)
    p64, v64 = params.astype(np.float64), np.zeros(n)
    for _ in range(3):
        g = rng.normal(size=n).astype(dtype)
        core.rmsprop_update(p_core, g, v_core, **hyper)
        reference.rmsprop_update(p_ref, g, v_ref, **hyper)
        # the formula, in float64
        g64 = g.astype(np.float64)
        v64 = rho * v64 + (1 - rho) * g64**2
        p64 = p64 - 0.01 * g64 / (np.sqrt(v64) + 1e-3)
        r = 1e-12 if dtype == np.float64 else 1e-5
        for a, b in [(p_core, p_ref), (v_core, v_ref), (p_core, p64), (v_core, v64)]:
            assert a.dtype == dtype
            assert_allclose(a, b, rtol=r, atol=r)
    assert not np.allclose(p_core, params)


@pytest.mark.parametrize("n_coef", ["none", "half", "all"])
@pytest.mark.parametrize("n", [1, 7, 1003])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("t0", [1, 5])
def test_adamw_update(t0, dtype, n, n_coef):
    n_coef = {"none": 0, "half": n // 2, "all": n}[n_coef]
    rng = np.random.default_rng(seed_of("adamw", t0, n, n_coef))
    params = rng.normal(size=n).astype(dtype)
    hyper = dict(learning_rate=0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-3,
                 weight_decay=3.0, n_coef=n_coef)
    m0 = (0.1 * rng.normal(size=n)).astype(dtype) if t0 > 1 else np.zeros(n, dtype)
    v0 = (0.1 * rng.uniform(size=n)).astype(dtype) if t0 > 1 else np.zeros(n, dtype)
    p_core, m_core, v_core = params.copy(), m0.copy(), v0.copy()
    p_ref, m_ref, v_ref = params.copy(), m0.copy(), v0.copy()
    p64, m64, v64 = params.astype(np.float64), m0.astype(np.float64), v0.astype(np.float64)
    for t in range(t0, t0 + 3):
        g = rng.normal(size=n).astype(dtype)
        core.adamw_update(p_core, g, m_core, v_core, t=t, **hyper)
        reference.adamw_update(p_ref, g, m_ref, v_ref, t=t, **hyper)
        # PyTorch's AdamW, written out in float64
        g64 = g.astype(np.float64)
        p64[:n_coef] *= 1 - 0.01 * 3.0
        m64 = 0.8 * m64 + 0.2 * g64
        v64 = 0.99 * v64 + 0.01 * g64**2
        p64 = p64 - 0.01 * (m64 / (1 - 0.8**t)) / (np.sqrt(v64 / (1 - 0.99**t)) + 1e-3)
        r = 1e-12 if dtype == np.float64 else 1e-5
        for a, b in [(p_core, p_ref), (m_core, m_ref), (v_core, v_ref), (p_core, p64),
                     (m_core, m64), (v_core, v64)]:
            assert a.dtype == dtype
            assert_allclose(a, b, rtol=r, atol=r)


def test_adamw_decays_weights_only():
    """With a zero gradient the moments stay 0: the weights shrink by 1 - lr lambda, the
    intercepts do not move."""
    p = np.arange(1.0, 11.0)
    for module in (core, reference):
        q, m, v = p.copy(), np.zeros(10), np.zeros(10)
        module.adamw_update(q, np.zeros(10), m, v, t=1, learning_rate=0.1, beta_1=0.9,
                            beta_2=0.999, epsilon=1e-8, weight_decay=2.0, n_coef=6)
        assert_allclose(q[:6], p[:6] * 0.8, rtol=1e-15)
        assert_array_equal(q[6:], p[6:])


def test_new_update_errors():
    a = np.zeros(5)
    with pytest.raises(ValueError, match="same length"):
        core.rmsprop_update(a.copy(), np.zeros(4), np.zeros(5), learning_rate=0.1, rho=0.9,
                            epsilon=1e-8)
    with pytest.raises(ValueError, match="rho"):
        core.rmsprop_update(a.copy(), np.zeros(5), np.zeros(5), learning_rate=0.1, rho=1.0,
                            epsilon=1e-8)
    kw = dict(t=1, learning_rate=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
              weight_decay=0.1, n_coef=3)
    with pytest.raises(ValueError, match="same length"):
        core.adamw_update(a.copy(), np.zeros(5), np.zeros(5), np.zeros(6), **kw)
    with pytest.raises(ValueError, match="counts updates from 1"):
        core.adamw_update(a.copy(), np.zeros(5), np.zeros(5), np.zeros(5), **{**kw, "t": 0})
    with pytest.raises(ValueError, match="n_coef"):
        core.adamw_update(a.copy(), np.zeros(5), np.zeros(5), np.zeros(5),
                          **{**kw, "n_coef": 6})
    with pytest.raises(ValueError, match="weight_decay"):
        core.adamw_update(a.copy(), np.zeros(5), np.zeros(5), np.zeros(5),
                          **{**kw, "weight_decay": -1.0})
    with pytest.raises(TypeError, match="1-D float64"):
        core.rmsprop_update(a.copy(), np.zeros(5, np.float32), np.zeros(5), learning_rate=0.1,
                            rho=0.9, epsilon=1e-8)
    assert {"rmsprop_update", "adamw_update"} <= set(reference.__all__)
    assert {"rmsprop_update", "adamw_update"} <= set(core.__all__)


# =======================================================================================
# Trainer epochs vs a NumPy loop over the reference: whole, rows, units, CSR
# =======================================================================================


def _epochs_match(p, params, solver, dtype, rng, shuffled, kind, X=None, batches=(7, 5)):
    hyper = NEW[solver]
    alpha = 0.3 if solver == "rmsprop" else 0.0  # adamw's epochs carry no L2 term
    trainer = core.Trainer(p.sizes, p.activation, p.loss, params.copy(), **hyper)
    expect = NumpyTrainer(p.sizes, p.activation, p.loss, params.copy(), **hyper)
    X = p.X if X is None else X
    n = p.Y.shape[0]
    for epoch, batch_size in enumerate(batches):
        order = rng.permutation(n).astype(np.intp) if shuffled else None
        sizes = np.array(p.sizes, dtype=np.intp)
        part = (_kernels.epoch_partition(sizes, batch_size, X[0].shape[0], n)
                if isinstance(X, tuple) else _kernels.epoch_partition(sizes, batch_size))
        assert part[0] == kind, part
        acc = trainer.run_epoch(X, p.Y, batch_size=batch_size, alpha=alpha,
                                sample_weight=p.sample_weight, order=order)
        acc_e = expect.run_epoch(p.X, p.Y, batch_size=batch_size, alpha=alpha,
                                 sample_weight=p.sample_weight, order=order)
        assert_epoch_close(trainer.params, expect.params, dtype, f"params, epoch {epoch}")
        assert_epoch_close(trainer.state_1, expect.state_1, dtype, f"state_1, {epoch}")
        if solver == "adamw":
            assert_epoch_close(trainer.state_2, expect.state_2, dtype, f"state_2, {epoch}")
            assert int(trainer.counter[0]) == expect.t > 0
        else:
            assert int(trainer.counter[0]) == 0 and trainer.state_2.shape == (0,)
        assert_allclose(acc, acc_e, rtol=EPOCH_TOL[dtype]["rtol"])
    assert not np.allclose(trainer.params, params)
    return trainer


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("shuffled", [False, True], ids=["in-order", "order"])
@pytest.mark.parametrize("solver", list(NEW))
@pytest.mark.parametrize("loss", LOSSES)
def test_trainer_whole_minibatches(loss, solver, shuffled, weighted, dtype):
    p, params = trainer_problem(loss, dtype, weighted=weighted,
                                 seed=seed_of("new-whole", loss, solver, shuffled, weighted))
    rng = np.random.default_rng(seed_of("new-order", loss, solver))
    _epochs_match(p, params, solver, dtype, rng, shuffled, "whole")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("shuffled", [False, True], ids=["in-order", "order"])
@pytest.mark.parametrize("solver", list(NEW))
@pytest.mark.parametrize("loss", ["squared_error", "log_loss"])
def test_trainer_split_by_rows(loss, solver, shuffled, dtype):
    """61 rows in batches of 20 and 9, each cut in parts of rows (the optimizer steps
    the flat vector in segments, adding the parts' gradients)."""
    p, params = trainer_problem(loss, dtype, weighted=True, n=61,
                                 seed=seed_of("new-rows", loss, solver, shuffled))
    rng = np.random.default_rng(seed_of("new-rows-order", loss, solver))
    with split_from(2):
        _epochs_match(p, params, solver, dtype, rng, shuffled, "rows", batches=(20, 9))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("shuffled", [False, True], ids=["in-order", "order"])
@pytest.mark.parametrize("solver", list(NEW))
@pytest.mark.parametrize("loss", ["squared_error", "log_loss"])
def test_trainer_split_by_units(loss, solver, shuffled, dtype):
    """Each layer's units in parts (widths 40 and 33 cut, the output layer of 18 too
    for squared_error): the step runs per part of W_l and b_l."""
    sizes = (20, 40, 33, 18) if loss == "squared_error" else (20, 40, 33, 3)
    p, params = trainer_problem(loss, dtype, activation="relu", weighted=True, n=61,
                                 sizes=sizes, seed=seed_of("new-units", loss, solver, shuffled))
    rng = np.random.default_rng(seed_of("new-units-order", loss, solver))
    with units_from(1):
        _epochs_match(p, params, solver, dtype, rng, shuffled, "units", batches=(20, 9))


@pytest.mark.parametrize("split", [False, True], ids=["whole", "rows"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("solver", list(NEW))
def test_trainer_csr(solver, dtype, split):
    p, params = trainer_problem("log_loss", dtype, weighted=True, n=61,
                                 seed=seed_of("new-csr", solver, split))
    rng = np.random.default_rng(seed_of("new-csr-x", solver))
    p.X = np.ascontiguousarray(p.X * (rng.uniform(size=p.X.shape) < 0.4))
    X = core.csr_parts(sp.csr_matrix(p.X))
    if split:
        with split_from(2), csr_split_from(0):
            _epochs_match(p, params, solver, dtype, rng, True, "rows", X=X, batches=(20, 9))
    else:
        _epochs_match(p, params, solver, dtype, rng, True, "whole", X=X)


@pytest.mark.parametrize("solver", list(NEW))
def test_trainer_pickle_and_bitwise_any_thread_count(solver):
    """The state (v; m, v and t) survives pickling; a row split gives the same bits on
    one thread and two."""
    from threadpoolctl import threadpool_limits

    p, params = trainer_problem("log_loss", np.float64, n=61, seed=seed_of("new-pk", solver))
    trainer = core.Trainer(p.sizes, p.activation, p.loss, params.copy(), **NEW[solver])
    trainer.run_epoch(p.X, p.Y, batch_size=7)
    clone = pickle.loads(pickle.dumps(trainer))
    assert clone.params is None and clone.solver == solver
    clone.params = trainer.params.copy()
    for t in (trainer, clone):
        t.run_epoch(p.X, p.Y, batch_size=7)
    assert_array_equal(clone.params, trainer.params)
    assert_array_equal(clone.counter, trainer.counter)
    out = []
    for nt in (1, 2):
        with threadpool_limits(limits=nt), split_from(2):
            tr = core.Trainer(p.sizes, p.activation, p.loss, params.copy(), **NEW[solver])
            tr.run_epoch(p.X, p.Y, batch_size=20)
            out.append(tr.params)
    assert_array_equal(out[0], out[1])


def test_trainer_adamw_refuses_an_l2_term():
    p, params = trainer_problem("log_loss", np.float64, seed=1)
    trainer = core.Trainer(p.sizes, p.activation, p.loss, params.copy(), **NEW["adamw"])
    with pytest.raises(ValueError, match="alpha=0"):
        trainer.run_epoch(p.X, p.Y, batch_size=7, alpha=0.1)


def test_kernel_checks_hyper_length_for_new_solvers():
    """A kernel caller passing the 6 scalars of sgd/adam to rmsprop/adamw is refused."""
    p, params = trainer_problem("squared_error", np.float64, seed=2)
    for solver in NEW:
        trainer = core.Trainer(p.sizes, p.activation, p.loss, params.copy(), **NEW[solver])
        trainer.hyper = trainer.hyper[:6].copy()
        with pytest.raises(ValueError, match="hyper"):
            trainer.run_epoch(p.X, p.Y, batch_size=7)


# =======================================================================================
# estimators: the first step of every solver, by hand from the reference gradient
# =======================================================================================

LR, ALPHA = 0.05, 0.3
FIRST = {
    "sgd": dict(solver="sgd", momentum=0.9, nesterovs_momentum=False),
    "sgd-nesterov": dict(solver="sgd", momentum=0.9, nesterovs_momentum=True),
    "adam": dict(solver="adam", beta_1=0.8, beta_2=0.99, epsilon=1e-6),
    "rmsprop": dict(solver="rmsprop", rho=0.7, epsilon=1e-6),
    "adamw": dict(solver="adamw", beta_1=0.8, beta_2=0.99, epsilon=1e-6),
}


def _expected_first_step(name, coefs, intercepts, g_coefs, g_ints):
    """The parameters after one step from (coefs, intercepts) with the normalised
    gradient g (L2 term included except for adamw), each solver's formula by hand."""
    kw = FIRST[name]
    out_c, out_i = [], []
    for params, grads, out, weights in ((coefs, g_coefs, out_c, True),
                                        (intercepts, g_ints, out_i, False)):
        for w, g in zip(params, grads):
            w, g = w.astype(np.float64), g.astype(np.float64)
            if name == "sgd":
                new = w - LR * g                                  # v = -lr g; w += v
            elif name == "sgd-nesterov":
                new = w + 0.9 * (-LR * g) - LR * g                # w += mu v - lr g
            elif name == "adam":                                  # scikit-learn's Adam
                m, v = (1 - 0.8) * g, (1 - 0.99) * g**2
                step = LR * np.sqrt(1 - 0.99) / (1 - 0.8)
                new = w - step * m / (np.sqrt(v) + 1e-6)
            elif name == "rmsprop":
                v = (1 - 0.7) * g**2
                new = w - LR * g / (np.sqrt(v) + 1e-6)
            else:  # adamw, t = 1: m_hat = g, v_hat = g^2
                m_hat = ((1 - 0.8) * g) / (1 - 0.8)
                v_hat = ((1 - 0.99) * g**2) / (1 - 0.99)
                decayed = w * (1 - LR * ALPHA) if weights else w
                new = decayed - LR * m_hat / (np.sqrt(v_hat) + 1e-6)
            out.append(new)
    return out_c, out_i


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("cls", [MLPRegressor, MLPClassifier])
@pytest.mark.parametrize("name", list(FIRST))
def test_first_step_by_hand(name, cls, dtype):
    rng = np.random.RandomState(seed_of("first", name) % 1000)
    n = 37
    X = rng.randn(n, 4).astype(dtype)
    y = X[:, 0] - 2 * X[:, 1] if cls is MLPRegressor else rng.randint(0, 3, n)
    est = cls(hidden_layer_sizes=(6, 5), activation="tanh", max_iter=1, batch_size=n,
              shuffle=False, learning_rate="constant", learning_rate_init=LR, alpha=ALPHA,
              random_state=0, warm_start=True, tol=0, **FIRST[name])
    est.fit(X, y)  # initialises; the next fit (warm start) starts from the weights below
    # known starting weights (assigned, as scikit-learn allows), and a fresh optimizer
    start = np.random.RandomState(1)
    W0 = [start.uniform(-0.5, 0.5, c.shape).astype(dtype) for c in est.coefs_]
    b0 = [start.uniform(-0.5, 0.5, b.shape).astype(dtype) for b in est.intercepts_]
    est.coefs_ = [w.copy() for w in W0]
    est.intercepts_ = [b.copy() for b in b0]
    est.fit(X, y)
    if cls is MLPRegressor:
        Y, loss = y.reshape(-1, 1).astype(np.float64), "squared_error"
    else:
        Y, loss = est._label_binarizer.transform(y).astype(np.float64), "log_loss"
    alpha = 0.0 if name == "adamw" else ALPHA  # adamw: no L2 term, in the loss or the step
    value, gc, gi = reference.loss_and_gradients(
        [w.astype(np.float64) for w in W0], [b.astype(np.float64) for b in b0],
        X.astype(np.float64), Y, activation="tanh", loss=loss, alpha=alpha)
    exp_c, exp_i = _expected_first_step(name, W0, b0, gc, gi)
    r = dict(rtol=1e-10, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-5)
    for got, exp in zip(est.coefs_ + est.intercepts_, exp_c + exp_i):
        assert got.dtype == dtype
        assert_allclose(got, exp, **r)
    # the epoch's loss is the loss at the starting weights (adamw's without L2 term)
    assert_allclose(est.loss_curve_[-1], value, rtol=r["rtol"])
    assert est._optimizer.solver == FIRST[name]["solver"]
    if name == "adamw":
        assert int(est._optimizer.counter[0]) == 1


# =======================================================================================
# estimators: parameters, partial_fit, warm_start, pickling, interop
# =======================================================================================


def _data(n=120, seed=0, dtype=np.float64):
    rng = np.random.RandomState(seed)
    X = rng.randn(n, 5).astype(dtype)
    return X, (X[:, 0] + X[:, 1] > 0).astype(int), X[:, 0] - X[:, 2]


@pytest.mark.parametrize("rho", [-0.1, 1.0, 1.5, "0.5", None])
def test_rho_is_validated(rho):
    X, y, _ = _data()
    with pytest.raises(InvalidParameterError, match="rho"):
        MLPClassifier(solver="rmsprop", rho=rho, max_iter=1).fit(X, y)


def test_new_solvers_are_validated_and_listed():
    assert MLPRegressor().get_params()["rho"] == 0.9
    assert MLPClassifier(rho=0.0).rho == 0.0  # 0 is allowed: v = g^2 each step
    X, y, _ = _data()
    with pytest.raises(InvalidParameterError, match="solver"):
        MLPClassifier(solver="rmsprop2").fit(X, y)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_rho_only_changes_rmsprop():
    X, _, yr = _data()
    kw = dict(hidden_layer_sizes=(7,), max_iter=3, random_state=0, batch_size=32)
    for solver in ("adam", "sgd", "adamw"):
        a = MLPRegressor(solver=solver, rho=0.3, **kw).fit(X, yr)
        b = MLPRegressor(solver=solver, **kw).fit(X, yr)
        for u, v in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
            assert_array_equal(u, v)
    a = MLPRegressor(solver="rmsprop", rho=0.3, **kw).fit(X, yr)
    b = MLPRegressor(solver="rmsprop", **kw).fit(X, yr)
    assert not np.array_equal(a.coefs_[0], b.coefs_[0])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("solver", list(NEW))
def test_partial_fit_continues_fit(solver, dtype):
    """Three partial_fit calls are three epochs of one fit: the optimizer state (and
    AdamW's t) carries over calls."""
    X, y, _ = _data(dtype=dtype)
    kw = dict(solver=solver, hidden_layer_sizes=(8,), batch_size=25, shuffle=False,
              random_state=0, tol=0, n_iter_no_change=100, learning_rate_init=0.01)
    fitted = MLPClassifier(max_iter=3, **kw).fit(X, y)
    inc = MLPClassifier(**kw)
    for _ in range(3):
        inc.partial_fit(X, y, classes=[0, 1])
    for u, v in zip(fitted.coefs_ + fitted.intercepts_, inc.coefs_ + inc.intercepts_):
        assert u.dtype == dtype
        assert_array_equal(u, v)
    assert fitted.loss_curve_ == inc.loss_curve_
    if solver == "adamw":
        assert int(inc._optimizer.counter[0]) == 3 * 5


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("solver", list(NEW))
def test_pickle_round_trip_and_warm_start(solver):
    X, y, yr = _data()
    est = MLPRegressor(solver=solver, hidden_layer_sizes=(8,), batch_size=30, max_iter=2,
                       random_state=0, learning_rate_init=0.01, rho=0.75, alpha=0.05)
    est.fit(X, yr)
    clone = pickle.loads(pickle.dumps(est))
    assert clone.get_params() == est.get_params()
    assert_array_equal(clone.predict(X), est.predict(X))
    # the optimizer state came along: the next partial_fit is the same on both
    est.partial_fit(X, yr)
    clone.partial_fit(X, yr)
    for u, v in zip(est.coefs_ + est.intercepts_, clone.coefs_ + clone.intercepts_):
        assert_array_equal(u, v)
    # warm_start: a new fit starts from the weights it has (and a fresh optimizer)
    before = [c.copy() for c in est.coefs_]
    est.set_params(warm_start=True, max_iter=1)
    est.fit(X, yr)
    assert est.n_iter_ == 1
    cold = MLPRegressor(**{**est.get_params(), "warm_start": False}).fit(X, yr)
    assert not np.array_equal(est.coefs_[0], cold.coefs_[0])
    assert not np.array_equal(est.coefs_[0], before[0])
    assert len(est.loss_curve_) == 4


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_adamw_loss_curve_has_no_l2_term():
    """alpha is AdamW's weight decay: it changes the weights, never the reported loss
    at given weights (the first epoch's loss, full batch, is the data loss at the
    initial weights whatever alpha is)."""
    X, y, _ = _data()
    kw = dict(solver="adamw", hidden_layer_sizes=(8,), batch_size=120, shuffle=False,
              random_state=0, max_iter=3, learning_rate_init=0.01)
    small = MLPClassifier(alpha=0.0, **kw).fit(X, y)
    big = MLPClassifier(alpha=5.0, **kw).fit(X, y)
    assert small.loss_curve_[0] == big.loss_curve_[0]
    assert not np.array_equal(small.coefs_[0], big.coefs_[0])
    # a weight decay shrinks the weights (adam with an L2 term would report it in the
    # loss: adam's first loss is larger by alpha / 2 ||W||^2 / n)
    assert np.abs(big.coefs_[0]).sum() < np.abs(small.coefs_[0]).sum()
    adam = MLPClassifier(**{**kw, "solver": "adam", "alpha": 5.0}).fit(X, y)
    sq = sum(float((c.astype(np.float64) ** 2).sum()) for c in
             MLPClassifier(**{**kw, "max_iter": 1, "learning_rate_init": 1e-300})
             .fit(X, y).coefs_)
    assert_allclose(adam.loss_curve_[0], small.loss_curve_[0] + 5.0 * sq / (2 * 120),
                    rtol=1e-6)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("solver", list(NEW))
def test_new_solvers_learn_and_sparse_matches_dense(solver):
    X, y, yr = _data(n=300)
    kw = dict(solver=solver, hidden_layer_sizes=(16,), random_state=0, max_iter=60,
              learning_rate_init=0.01)
    assert MLPClassifier(**kw).fit(X, y).score(X, y) > 0.9
    assert MLPRegressor(**kw).fit(X, yr).score(X, yr) > 0.9
    Xz = np.where(np.abs(X) > 0.5, X, 0.0)
    dense = MLPClassifier(**{**kw, "max_iter": 3}).fit(Xz, y)
    sparse = MLPClassifier(**{**kw, "max_iter": 3}).fit(sp.csr_matrix(Xz), y)
    for u, v in zip(dense.coefs_ + dense.intercepts_, sparse.coefs_ + sparse.intercepts_):
        assert_allclose(u, v, rtol=1e-9, atol=1e-12)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("solver", list(NEW))
def test_to_sklearn_refuses_new_solvers(solver):
    """scikit-learn's MLPs have no such solver nor its optimizer state: exporting would
    give a model that trains on differently, so to_sklearn raises."""
    X, y, _ = _data()
    est = MLPClassifier(solver=solver, hidden_layer_sizes=(4,), max_iter=2,
                        random_state=0).fit(X, y)
    with pytest.raises(ValueError, match=f"solver='{solver}'"):
        est.to_sklearn()


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_changing_the_solver_between_partial_fits_starts_a_new_state():
    X, y, _ = _data()
    est = MLPClassifier(solver="adamw", hidden_layer_sizes=(4,), random_state=0, alpha=0.1)
    est.partial_fit(X, y, classes=[0, 1])
    est.set_params(solver="adam")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ValueError about alpha either
        est.partial_fit(X, y)
    assert est._optimizer.solver == "adam"
