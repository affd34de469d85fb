"""Dropout: inverted dropout on the hidden layers' outputs in training.

The masks (``reference.dropout_mask``, compiled in csrc/fp_dropout.h) against each
other; the reference's gradient with fixed masks against finite differences; the
compiled epoch (whole, row-split and unit-split minibatches, dense and CSR X, float32
and float64) against plain SGD steps on the reference gradient with the same masks;
and the estimators' ``dropout`` parameter.
"""

import contextlib
import dataclasses
import pickle
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import InvalidParameterError

import fastprop.core as core
from fastprop import MLPClassifier, MLPRegressor, reference
from fastprop.core import _kernels

from .helpers import (
    ACTIVATIONS,
    DTYPES,
    FD_TOL,
    assert_epoch_close,
    assert_result_close,
    fd_gradient,
    flat_pack,
    flat_unpack,
    make_problem,
    split_from,
    tol,
    units_from,
)

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


# -- masks ------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2**63 + 12345, 2**64 - 1])
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9])
def test_compiled_masks_are_the_reference_masks(seed, p):
    for batch, layer, n_rows, n_units, row0, unit0 in [
        (0, 0, 7, 5, 0, 0), (3, 1, 1, 1, 0, 0), (17, 2, 40, 33, 64, 128),
        (2**40, 7, 3, 9, 5, 2),
    ]:
        want = reference.dropout_mask(seed, batch, layer, n_rows, n_units, p,
                                      row0=row0, unit0=unit0)
        got = core.dropout_mask(seed, batch, layer, n_rows, n_units, p,
                                row0=row0, unit0=unit0)
        assert got.dtype == bool and got.shape == (n_rows, n_units)
        np.testing.assert_array_equal(got, want)
        if p == 0:
            assert want.all()


def test_masks_of_a_block_are_a_block_of_the_masks():
    # what lets row and unit splits draw the whole minibatch's masks piece by piece
    full = reference.dropout_mask(9, 4, 1, 30, 20, 0.4)
    np.testing.assert_array_equal(
        reference.dropout_mask(9, 4, 1, 10, 7, 0.4, row0=12, unit0=5), full[12:22, 5:12])
    np.testing.assert_array_equal(
        core.dropout_mask(9, 4, 1, 10, 7, 0.4, row0=12, unit0=5), full[12:22, 5:12])


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.8])
def test_mask_rate_and_scale(p):
    n_rows, n_units = 400, 250
    keep = reference.dropout_mask(123, 5, 0, n_rows, n_units, p)
    n = keep.size
    # the kept fraction is 1 - p within 5 standard deviations
    assert abs(keep.mean() - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n)
    # and so in every row and column on average, with no structure along either
    assert abs(keep.mean(axis=0).std() - np.sqrt(p * (1 - p) / n_rows)) < 0.02
    assert abs(keep.mean(axis=1).std() - np.sqrt(p * (1 - p) / n_units)) < 0.02
    # other minibatches, layers and seeds draw other masks
    for other in [(123, 6, 0), (123, 5, 1), (124, 5, 0)]:
        agree = (reference.dropout_mask(*other, n_rows, n_units, p) == keep).mean()
        assert abs(agree - (p * p + (1 - p) ** 2)) < 0.01
    for dtype in DTYPES:
        (M,) = reference.dropout_masks(123, 5, [p], n_rows, [n_units], dtype)
        assert M.dtype == dtype
        np.testing.assert_array_equal(M[~keep], 0)
        np.testing.assert_array_equal(M[keep], np.asarray(1 / (1 - p), dtype=dtype))
        assert abs(M.mean() - 1) < 5 * np.sqrt(p / (1 - p) / n)   # inverted: E[M] = 1


def test_mask_arguments():
    with pytest.raises(ValueError):
        reference.dropout_mask(0, 0, 0, 2, 2, 1.0)
    with pytest.raises(ValueError):
        core.dropout_mask(0, 0, 0, 2, 2, -0.1)
    assert core.dropout_mask(0, 0, 0, 0, 3, 0.5).shape == (0, 3)
    assert reference.dropout_masks(0, 0, [0.0, 0.5], 3, [2, 4])[0] is None


# -- the reference's gradient with fixed masks -------------------------------------------

# the activations after ReLU take their derivative through the restored outputs, or the
# kept pre-activations (gelu, silu)
ALL_ACTIVATIONS = ACTIVATIONS + ("leaky_relu", "elu", "softplus", "gelu", "silu")


def _masks(rng, rates, n, hidden, dtype=np.float64):
    """Random fixed masks (the formula does not depend on how they were drawn)."""
    out = []
    for p, h in zip(rates, hidden):
        out.append(None if p == 0 else
                   np.where(rng.random((n, h)) >= p, 1 / (1 - p), 0.0).astype(dtype))
    return out


@pytest.mark.parametrize("activation", ALL_ACTIVATIONS)
@pytest.mark.parametrize("loss", ["squared_error", "poisson", "log_loss", "binary_log_loss"])
def test_reference_gradient_matches_finite_differences(activation, loss):
    sizes = [3, 5, 4, 3 if loss == "log_loss" else 2]
    p = make_problem(n_samples=6, sizes=sizes, activation=activation, loss=loss, alpha=0.3,
                     weighted=True, seed=11, relu_margin=0.05 if activation in ("relu", "leaky_relu", "elu") else None)
    masks = _masks(np.random.default_rng(3), [0.4, 0.25], 6, sizes[1:-1])
    kw = dict(activation=activation, loss=loss, alpha=p.alpha, sample_weight=p.sample_weight)
    value, cg, ig = reference.dropout_loss_and_gradients(p.coefs, p.intercepts, p.X, p.Y,
                                                         masks, **kw)

    def f(x):
        c, b = flat_unpack(x, sizes)
        return reference.dropout_loss_and_gradients(c, b, p.X, p.Y, masks, **kw)[0]

    fd = fd_gradient(f, flat_pack(p.coefs, p.intercepts))
    got = flat_pack(cg, ig)
    np.testing.assert_allclose(got, fd, rtol=FD_TOL["rtol"],
                               atol=FD_TOL["atol_factor"] * np.abs(fd).max())
    # dropout changes the result; masks of None (or all ones) are loss_and_gradients
    plain = reference.loss_and_gradients(p.coefs, p.intercepts, p.X, p.Y, **kw)
    assert not np.allclose(got, flat_pack(plain[1], plain[2]))
    for none in ([None, None], [np.ones((6, 5)), np.ones((6, 4))]):
        same = reference.dropout_loss_and_gradients(p.coefs, p.intercepts, p.X, p.Y,
                                                    none, **kw)
        assert_result_close(same, plain, rtol=1e-14, atol_factor=1e-15)


def test_reference_rejects_masks_that_do_not_fit():
    p = make_problem(n_samples=4, sizes=[3, 5, 2])
    kw = dict(activation="tanh", loss="squared_error")
    with pytest.raises(ValueError):
        reference.dropout_loss_and_gradients(p.coefs, p.intercepts, p.X, p.Y, [], **kw)
    with pytest.raises(ValueError):
        reference.dropout_loss_and_gradients(p.coefs, p.intercepts, p.X, p.Y,
                                             [np.ones((4, 4))], **kw)


# -- the compiled epoch against the reference ---------------------------------------------

LR, ALPHA = 0.05, 0.1


def _reference_epoch(p, params, rates, seed, batch_size, order, dtype):
    """Plain SGD (momentum 0) over the epoch's minibatches, each step on the reference
    gradient with the minibatch's masks: what the compiled epoch computes."""
    sizes = p.sizes
    X = p.X if order is None else p.X[order]
    Y = p.Y if order is None else p.Y[order]
    flat = params.astype(np.float64)
    for b, start in enumerate(range(0, X.shape[0], batch_size)):
        Xb, Yb = X[start:start + batch_size], Y[start:start + batch_size]
        Xb = np.asarray(Xb.toarray() if sp.issparse(Xb) else Xb, dtype=np.float64)
        c, i = flat_unpack(flat, sizes)
        masks = reference.dropout_masks(seed, b, rates, Xb.shape[0], sizes[1:-1])
        _, cg, ig = reference.dropout_loss_and_gradients(
            c, i, Xb, Yb.astype(np.float64), masks, activation=p.activation, loss=p.loss,
            alpha=ALPHA)
        flat = flat - LR * flat_pack(cg, ig)
    return flat


def _trainer(p, params):
    return core.Trainer(p.sizes, p.activation, p.loss, params, "sgd", learning_rate=LR,
                        momentum=0.0, nesterov=False)


# (kind, sizes, rows, batch_size, context): the partition each case must get
EPOCHS = {
    "whole": ([6, 9, 7, 3], 14, 7, contextlib.nullcontext),
    "rows": ([6, 9, 7, 3], 40, 20, lambda: split_from(8)),
    "units": ([6, 9, 7, 3], 14, 7, lambda: units_from(0)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ALL_ACTIVATIONS)
@pytest.mark.parametrize("kind,sparse", [  # sparse minibatches are never cut by units
    ("whole", False), ("rows", False), ("units", False), ("whole", True), ("rows", True),
], ids=["whole-dense", "rows-dense", "units-dense", "whole-csr", "rows-csr"])
@pytest.mark.parametrize("shuffled", [False, True], ids=["in_place", "order"])
def test_epoch_matches_reference_sgd(dtype, activation, kind, sparse, shuffled):
    sizes, n, batch_size, context = EPOCHS[kind]
    p = make_problem(n_samples=n, sizes=sizes, activation=activation, loss="log_loss",
                     seed=5, x_scale=1.5)
    if sparse:
        X = sp.csr_matrix(np.where(np.abs(p.X) > 0.7, p.X, 0.0).astype(dtype))
        p = dataclasses.replace(p, X=X)
    params = flat_pack(p.coefs, p.intercepts).astype(dtype)
    order = np.random.default_rng(1).permutation(n) if shuffled else None
    rates, seed = [0.3, 0.5], 2**63 + 99
    X_core = core.csr_parts(p.X) if sparse else np.ascontiguousarray(p.X, dtype=dtype)
    Y_core = np.ascontiguousarray(p.Y, dtype=dtype)
    with context():
        sz = np.array(sizes, dtype=np.intp)
        part = (_kernels.epoch_partition(sz, batch_size, p.X.nnz, n) if sparse
                else _kernels.epoch_partition(sz, batch_size))
        assert part[0] == kind, part
        got = params.copy()
        _trainer(p, got).run_epoch(X_core, Y_core, batch_size=batch_size, alpha=ALPHA,
                                   order=order, dropout=rates, dropout_seed=seed)
        # no dropout: another model
        plain = params.copy()
        _trainer(p, plain).run_epoch(X_core, Y_core, batch_size=batch_size, alpha=ALPHA,
                                     order=order)
    want = _reference_epoch(p, params, rates, seed, batch_size, order, dtype)
    assert_epoch_close(got, want.astype(dtype), dtype, f"{kind} {activation}")
    assert not np.allclose(plain, got)


@pytest.mark.parametrize("activation", ALL_ACTIVATIONS)
def test_partitions_draw_the_same_masks(activation):
    # the same epoch cut three ways: the same model up to the order of the sums
    sizes, n, batch_size, _ = EPOCHS["rows"]
    p = make_problem(n_samples=n, sizes=sizes, activation=activation, loss="log_loss",
                     seed=8)
    params = flat_pack(p.coefs, p.intercepts)
    out = {}
    for kind in ("whole", "rows", "units"):
        with EPOCHS[kind][3]():
            assert _kernels.epoch_partition(np.array(sizes, dtype=np.intp),
                                            batch_size)[0] == kind
            got = params.copy()
            _trainer(p, got).run_epoch(p.X, p.Y, batch_size=batch_size, alpha=ALPHA,
                                       dropout=[0.5, 0.2], dropout_seed=7)
            out[kind] = got
    for kind in ("rows", "units"):
        np.testing.assert_allclose(out[kind], out["whole"], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes,n,batch_size", [
    ([1, 1, 1], 1, 1), ([1, 3, 1, 2], 5, 2), ([4, 1, 1, 3], 3, 3),
])
def test_odd_shapes(dtype, sizes, n, batch_size):
    loss = "log_loss" if sizes[-1] > 2 else "squared_error"
    p = make_problem(n_samples=n, sizes=sizes, activation="tanh", loss=loss, seed=4)
    params = flat_pack(p.coefs, p.intercepts).astype(dtype)
    rates = [0.5] * (len(sizes) - 2)
    for seed in range(4):
        got = params.copy()
        _trainer(p, got).run_epoch(p.X.astype(dtype), p.Y.astype(dtype),
                                   batch_size=batch_size, alpha=ALPHA, dropout=rates,
                                   dropout_seed=seed)
        want = _reference_epoch(p, params, rates, seed, batch_size, None, dtype)
        assert_epoch_close(got, want.astype(dtype), dtype)


@pytest.mark.parametrize("kind", ["whole", "rows", "units"])
def test_zero_rates_are_the_epoch_without_dropout(kind):
    sizes, n, batch_size, context = EPOCHS[kind]
    p = make_problem(n_samples=n, sizes=sizes, activation="tanh", loss="log_loss", seed=2)
    params = flat_pack(p.coefs, p.intercepts)
    with context():
        runs = []
        for kw in [{}, dict(dropout=None, dropout_seed=5), dict(dropout=[0.0, 0.0]),
                   dict(dropout=np.zeros(2), dropout_seed=3)]:
            got = params.copy()
            trainer = core.Trainer(p.sizes, p.activation, p.loss, got, "adam")
            trainer.run_epoch(p.X, p.Y, batch_size=batch_size, alpha=ALPHA, **kw)
            runs.append(got)
        for got in runs[1:]:
            np.testing.assert_array_equal(got, runs[0])
        # a rate of 0 for a layer leaves that layer undropped
        got = params.copy()
        _trainer(p, got).run_epoch(p.X, p.Y, batch_size=batch_size, alpha=ALPHA,
                                   dropout=[0.0, 0.4], dropout_seed=5)
    want = _reference_epoch(p, params, [0.0, 0.4], 5, batch_size, None, np.float64)
    assert_epoch_close(got, want, np.float64)


def test_epoch_checks_its_dropout():
    p = make_problem(n_samples=8, sizes=[3, 4, 5, 2])
    params = flat_pack(p.coefs, p.intercepts)
    trainer = _trainer(p, params)
    for bad in ([0.1], [0.1, 0.2, 0.3], [0.1, 1.0], [-0.1, 0.0], [np.nan, 0.1]):
        with pytest.raises(ValueError):
            trainer.run_epoch(p.X, p.Y, batch_size=4, dropout=bad)
    with pytest.raises(ValueError):
        trainer.run_epoch(p.X, p.Y, batch_size=4, dropout=[0.1, 0.1], dropout_seed=-1)
    sizes = np.array(p.sizes, dtype=np.intp)
    args = (sizes, _kernels.ACTIVATION_CODES["tanh"], _kernels.LOSS_CODES["squared_error"])
    # the kernel checks too (the last line of defence)
    n = core.n_params(p.sizes)
    work = 4 * sum(p.sizes[1:])
    buffers = dict(
        params=params.copy(), grads=np.empty(n), X=p.X, Y=p.Y, sample_weight=np.empty(0),
        order=np.empty(0, np.intp), batch_size=4, alpha=0.0, acts=np.empty(work),
        deltas=np.empty(work), x_buf=np.empty((4, 3)), y_buf=np.empty((4, 2)),
        sw_buf=np.empty(4), solver=0, state_1=np.zeros(n), state_2=np.zeros(n),
        hyper=np.array([0.1, 0.0, 0.0, 0.9, 0.999, 1e-8]), counter=np.zeros(1, np.intp),
        grads2=np.empty(0), n_threads=1)
    _kernels.train_epoch(*args, *buffers.values(), dropout=np.array([0.2, 0.3]))
    for bad in (np.array([0.2]), np.array([0.2, 1.5])):
        with pytest.raises(ValueError):
            _kernels.train_epoch(*args, *buffers.values(), dropout=bad)


# -- estimators -------------------------------------------------------------------------

def _data(n=120, n_features=6, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.randn(n, n_features)
    y = (X[:, 0] + X[:, 1] ** 2 > 0.5).astype(int) + (X[:, 2] > 1)
    return X, y


def _digest(est):
    return [a.copy() for a in est.coefs_ + est.intercepts_]


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def _clf(**kw):
    params = dict(hidden_layer_sizes=(16, 12), max_iter=5, random_state=0, batch_size=20,
                  dropout=0.3)
    params.update(kw)
    return MLPClassifier(**params)


@pytest.mark.parametrize("solver", ["sgd", "adam"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_fit_is_reproducible_and_differs_from_no_dropout(solver, dtype):
    X, y = _data()
    X = X.astype(dtype)
    a = _clf(solver=solver).fit(X, y)
    b = _clf(solver=solver).fit(X, y)
    assert _same(_digest(a), _digest(b))
    assert a.coefs_[0].dtype == dtype
    plain = _clf(solver=solver, dropout=0.0).fit(X, y)
    assert not _same(_digest(a), _digest(plain))
    # a RandomState instance: reproducible from the same state
    c = _clf(solver=solver, random_state=np.random.RandomState(4)).fit(X, y)
    d = _clf(solver=solver, random_state=np.random.RandomState(4)).fit(X, y)
    assert _same(_digest(c), _digest(d))


def test_zero_dropout_is_the_default_model():
    # rates of 0 draw nothing from the random state: the default fit, bitwise
    X, y = _data()
    base = _digest(MLPClassifier(hidden_layer_sizes=(16, 12), max_iter=4, random_state=0)
                   .fit(X, y))
    for value in (0.0, 0, (0.0, 0.0), [0, 0], np.zeros(2)):
        got = _digest(_clf(dropout=value, max_iter=4, batch_size="auto").fit(X, y))
        assert _same(got, base), value


def test_epoch_of_the_estimator_is_the_reference_epoch():
    # one epoch, no shuffle: the seed the estimator draws, then the reference's SGD steps
    X, y = _data(n=60)
    Y = np.eye(3)[y]
    est = _clf(solver="sgd", momentum=0.0, shuffle=False, max_iter=1, batch_size=25,
               learning_rate_init=LR, alpha=ALPHA, dropout=(0.2, 0.45))
    # the initial weights: the same draws as the fit's first ones
    rs = np.random.RandomState(0)
    sizes = [6, 16, 12, 3]
    coefs, intercepts = [], []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        bound = np.sqrt(6.0 / (n_in + n_out))
        coefs.append(rs.uniform(-bound, bound, (n_in, n_out)))
        intercepts.append(rs.uniform(-bound, bound, n_out))
    seed = int(rs.randint(0, 2**63, dtype=np.int64))  # t_ is 0 in the first epoch
    est.fit(X, y)
    p = make_problem(n_samples=60, sizes=sizes, activation="relu", loss="log_loss")
    p = dataclasses.replace(p, coefs=coefs, intercepts=intercepts, X=X,
                            Y=Y.astype(float), sizes=sizes)
    want = _reference_epoch(p, flat_pack(coefs, intercepts), [0.2, 0.45], seed, 25, None,
                            np.float64)
    assert_epoch_close(flat_pack(est.coefs_, est.intercepts_), want, np.float64)


def test_predict_uses_no_mask():
    X, y = _data()
    est = _clf(dropout=0.5, max_iter=10).fit(X, y)
    proba = reference.forward(est.coefs_, est.intercepts_, X, activation="relu",
                              loss="log_loss")
    np.testing.assert_allclose(est.predict_proba(X), proba, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(est.predict_proba(X), est.predict_proba(X))
    reg = MLPRegressor(hidden_layer_sizes=(8,), max_iter=5, random_state=0, dropout=0.4)
    reg.fit(X, X[:, 0])
    out = reference.forward(reg.coefs_, reg.intercepts_, X, activation="relu",
                            loss="squared_error")
    np.testing.assert_allclose(reg.predict(X), out.ravel(), rtol=1e-12, atol=1e-14)


def test_tuple_per_layer_and_zero_for_a_layer():
    X, y = _data()
    a = _digest(_clf(dropout=(0.3, 0.3)).fit(X, y))
    b = _digest(_clf(dropout=0.3).fit(X, y))
    assert _same(a, b)
    c = _digest(_clf(dropout=[0.0, 0.3]).fit(X, y))
    d = _digest(_clf(dropout=np.array([0.3, 0.0])).fit(X, y))
    assert not _same(a, c) and not _same(a, d) and not _same(c, d)


def test_partial_fit_calls_draw_new_masks(monkeypatch):
    # with an int random_state each call starts from the same random state; the seed
    # also takes the samples seen so far, so the calls do not repeat their masks
    X, y = _data(n=40)
    seeds = []
    run_epoch = core.Trainer.run_epoch

    def spy(self, *args, **kwargs):
        seeds.append((kwargs["dropout"] is not None, kwargs["dropout_seed"]))
        return run_epoch(self, *args, **kwargs)

    monkeypatch.setattr(core.Trainer, "run_epoch", spy)
    est = _clf(batch_size=40)
    for _ in range(3):
        est.partial_fit(X, y, classes=[0, 1, 2])
    assert [on for on, _ in seeds] == [True] * 3
    assert len({seed for _, seed in seeds}) == 3
    seeds.clear()
    _clf(dropout=0.0).partial_fit(X, y, classes=[0, 1, 2])
    assert seeds == [(False, 0)]


def test_partial_fit_warm_start_and_pickle():
    X, y = _data()
    # partial_fit: reproducible
    a, b = _clf(), _clf()
    for _ in range(3):
        a.partial_fit(X, y, classes=[0, 1, 2])
        b.partial_fit(X, y, classes=[0, 1, 2])
    assert _same(_digest(a), _digest(b))
    # pickled between calls, it goes on as the original
    c = pickle.loads(pickle.dumps(a))
    a.partial_fit(X, y)
    c.partial_fit(X, y)
    assert _same(_digest(a), _digest(c))
    assert c.dropout == 0.3
    # warm_start: reproducible too
    w1 = _clf(warm_start=True, max_iter=3).fit(X, y)
    w2 = _clf(warm_start=True, max_iter=3).fit(X, y)
    w1.fit(X, y)
    w2.fit(X, y)
    assert _same(_digest(w1), _digest(w2))
    assert w1.n_iter_ == 3
    # dropout may change between partial_fit calls
    a.set_params(dropout=(0.1, 0.0))
    a.partial_fit(X, y)
    a.set_params(dropout=0.0)
    a.partial_fit(X, y)


def test_sparse_early_stopping_and_regressor():
    X, y = _data(n=200)
    Xs = sp.csr_matrix(np.where(np.abs(X) > 0.8, X, 0.0))
    a = _clf().fit(Xs, y)
    b = _clf().fit(Xs, y)
    assert _same(_digest(a), _digest(b))
    # dense and sparse X: the same masks, the same model up to rounding
    d = _clf().fit(Xs.toarray(), y)
    for u, v in zip(_digest(a), _digest(d)):
        np.testing.assert_allclose(u, v, rtol=1e-9, atol=1e-11)
    es = _clf(early_stopping=True, max_iter=20).fit(X, y)
    assert len(es.validation_scores_) == es.n_iter_
    reg = MLPRegressor(hidden_layer_sizes=(10, 10), max_iter=5, random_state=0,
                       dropout=(0.2, 0.1), solver="sgd").fit(X, X[:, 0])
    assert np.isfinite(reg.loss_curve_).all()


def test_dropout_learns():
    X, y = _data(n=300)
    est = _clf(dropout=0.2, max_iter=200, batch_size=32, hidden_layer_sizes=(64, 64))
    est.fit(X, y)
    assert est.score(X, y) > 0.85


@pytest.mark.parametrize("value", [
    1.0, -0.1, 1.5, np.nan, "0.2", True, (0.2,), (0.2, 0.2, 0.2), (0.2, 1.0), (-0.1, 0.2),
    [[0.1, 0.2]], (0.1, "a"), (True, False), None,
])
def test_invalid_dropout_raises(value):
    X, y = _data(n=30)
    for est in (_clf(dropout=value), MLPRegressor(hidden_layer_sizes=(4, 4), dropout=value)):
        with pytest.raises(InvalidParameterError, match="dropout"):
            est.fit(X, y)


def test_lbfgs_with_dropout_raises():
    X, y = _data(n=30)
    with pytest.raises(ValueError, match="lbfgs"):
        _clf(solver="lbfgs").fit(X, y)
    with pytest.raises(ValueError, match="lbfgs"):
        MLPRegressor(solver="lbfgs", dropout=(0.0, 0.1), hidden_layer_sizes=(3, 3)).fit(
            X, X[:, 0])
    # rates of 0 are no dropout
    _clf(solver="lbfgs", dropout=(0.0, 0.0)).fit(X, y)


def test_failed_fit_leaves_the_model_as_it_was():
    X, y = _data(n=30)
    est = _clf(max_iter=2).fit(X, y)
    before = _digest(est)
    est.set_params(dropout=(0.1, 0.2, 0.3))
    with pytest.raises(InvalidParameterError):
        est.partial_fit(X, y)
    assert _same(_digest(est), before)


def test_to_sklearn_refuses_a_dropout_model():
    X, y = _data(n=30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = _clf(max_iter=2).fit(X, y)
    for value in (0.3, (0.3, 0.0), np.array([0.0, 0.1])):
        est.set_params(dropout=value)
        with pytest.raises(ValueError, match="dropout"):
            est.to_sklearn()
    for value in (0.0, (0.0, 0.0), np.zeros(2)):
        est.set_params(dropout=value)
        np.testing.assert_array_equal(est.to_sklearn().predict(X), est.predict(X))


def test_onnx_export_of_a_dropout_model_predicts_as_it():
    # prediction uses no mask, so the exported graph is the model's
    pytest.importorskip("skl2onnx")
    ort = pytest.importorskip("onnxruntime")
    from fastprop.onnx import to_onnx

    X, y = _data(n=50)
    X = X.astype(np.float32)
    est = _clf(dropout=(0.3, 0.2), max_iter=3).fit(X, y)
    session = ort.InferenceSession(to_onnx(est, X[:2]).SerializeToString())
    labels, proba = session.run(None, {session.get_inputs()[0].name: X})[:2]
    np.testing.assert_array_equal(labels, est.predict(X))
    np.testing.assert_allclose(proba, est.predict_proba(X), rtol=1e-5, atol=1e-6)
