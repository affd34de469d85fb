"""The robust regression losses ``huber`` (with ``huber_delta``) and ``absolute_error``:
the reference against finite differences, the compiled core against the reference
(float32 and float64, dense and CSR, weights, several outputs, odd shapes, blocks of
rows, the epoch's partitions), the kinks (r = 0, |r| = delta), their relation to
squared_error, and the estimator (every solver, partial_fit, warm_start, pickling,
parameter validation, to_sklearn)."""

import pickle
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose, assert_array_equal

import fastprop.core as core
from fastprop import MLPClassifier, MLPRegressor, reference
from fastprop._sklearn_compat import InvalidParameterError
from fastprop.core import _kernels

from .helpers import (
    DTYPES,
    EPOCH_TOL,
    FD_TOL,
    REORDER_TOL,
    SOLVERS,
    TOL,
    assert_epoch_close,
    assert_result_close,
    check_result_types,
    fd_gradient,
    flat_grad,
    flat_pack,
    flat_unpack,
    make_network,
    make_weights,
    np_logits,
    seed_of,
    split_from,
    tol,
    units_from,
)

ROBUST = ("huber", "absolute_error")
MODULES = pytest.mark.parametrize("module", [reference, core], ids=["reference", "core"])


def residuals(rng, shape, loss, delta, margin=0.1):
    """Residuals kept ``margin`` away from the loss's kinks (0, and +-delta for huber),
    both regimes of huber present, signs mixed."""
    if loss == "huber":
        inside = rng.uniform(margin, delta - margin, size=shape)
        outside = rng.uniform(delta + margin, delta + 3.0, size=shape)
        mag = np.where(rng.uniform(size=shape) < 0.5, inside, outside)
    else:
        mag = rng.uniform(margin, 3.0, size=shape)
    return mag * rng.choice([-1.0, 1.0], size=shape)


class Robust:
    """A network, X, and Y = its own logits minus chosen residuals (float64 maths),
    so that the residuals sit where the test wants them."""

    def __init__(self, loss, sizes=(3, 5, 2), n=13, activation="tanh", alpha=0.0,
                 weighted=False, delta=0.7, seed=0, margin=0.1, sparse_x=False):
        rng = np.random.default_rng(seed)
        self.sizes = list(sizes)
        self.coefs, self.intercepts = make_network(self.sizes, np.float64, seed=seed + 1)
        X = rng.normal(size=(n, sizes[0]))
        if sparse_x:
            X = X * (rng.uniform(size=X.shape) < 0.4)
            X[min(2, n - 1)] = 0.0  # an empty row
        self.X = X
        Z = np_logits(self.coefs, self.intercepts, X, activation)
        self.R = residuals(rng, Z.shape, loss, delta, margin)
        self.Y = Z - self.R
        self.loss, self.activation, self.alpha, self.delta = loss, activation, alpha, delta
        self.sample_weight = make_weights(rng, n) if weighted else None

    def kwargs(self, dtype=np.float64):
        sw = None if self.sample_weight is None else self.sample_weight.astype(dtype)
        return dict(activation=self.activation, loss=self.loss, alpha=self.alpha,
                    sample_weight=sw, huber_delta=self.delta)

    def args(self, dtype=np.float64):
        return ([W.astype(dtype) for W in self.coefs],
                [b.astype(dtype) for b in self.intercepts],
                self.X.astype(dtype), self.Y.astype(dtype))

    def call(self, module, dtype=np.float64, **over):
        kw = self.kwargs(dtype)
        kw.update(over)
        return module.loss_and_gradients(*self.args(dtype), **kw)


def np_robust_loss(Z, Y, loss, delta, w, alpha, coefs):
    """The documented loss, written out once more (float64)."""
    a = np.abs(np.asarray(Z, np.float64) - Y)
    if loss == "huber":
        per = np.where(a <= delta, 0.5 * a * a, delta * (a - delta / 2)).sum(axis=1)
    else:
        per = a.sum(axis=1)
    w = np.ones(len(per)) if w is None else np.asarray(w, np.float64)
    pen = 0.5 * alpha * sum(float((W.astype(np.float64) ** 2).sum()) for W in coefs)
    return float((w * per).sum() / w.sum() + pen / w.sum())


# =======================================================================================
# reference vs finite differences, core vs reference
# =======================================================================================

@pytest.mark.parametrize("alpha", [0.0, 0.4])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("sizes", [(3, 2), (3, 5, 2), (4, 5, 3, 3)], ids=["glm", "1h", "2h"])
@pytest.mark.parametrize("loss", ROBUST)
def test_reference_matches_finite_differences(loss, sizes, weighted, alpha):
    p = Robust(loss, sizes=sizes, alpha=alpha, weighted=weighted,
               seed=seed_of("fd", loss, sizes, weighted, alpha))
    value, cg, ig = p.call(reference)
    w = p.sample_weight

    def f(flat):
        coefs, intercepts = flat_unpack(flat, p.sizes)
        Z = np_logits(coefs, intercepts, p.X, p.activation)
        return np_robust_loss(Z, p.Y, loss, p.delta, w, alpha, coefs)

    x0 = flat_pack(p.coefs, p.intercepts)
    assert_allclose(float(value), f(x0), rtol=1e-12)
    fd = fd_gradient(f, x0)
    got = flat_grad((value, cg, ig))
    assert_allclose(got, fd, rtol=FD_TOL["rtol"], atol=FD_TOL["atol_factor"] * np.abs(fd).max())
    # the residuals cover both sides of every kink
    assert (p.R > 0).any() and (p.R < 0).any()
    if loss == "huber":
        assert (np.abs(p.R) < p.delta).any() and (np.abs(p.R) > p.delta).any()


@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("alpha", [0.0, 0.5])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("activation", ["identity", "logistic", "tanh", "relu"])
@pytest.mark.parametrize("loss", ROBUST)
def test_core_matches_reference(loss, activation, dtype, alpha, weighted, depth):
    sizes = (3, 4, 2) if depth == 1 else (3, 4, 5, 3, 3)
    p = Robust(loss, sizes=sizes, activation=activation, alpha=alpha, weighted=weighted,
               delta=0.6, seed=seed_of("cr", loss, activation, alpha, weighted, depth))
    got = p.call(core, dtype)
    ref = p.call(reference, dtype)

    class P:  # what check_result_types reads
        pass

    P.dtype, P.coefs, P.intercepts = np.dtype(dtype), *p.args(dtype)[:2]
    check_result_types(got, P)
    check_result_types(ref, P)
    assert_result_close(got, ref, **tol(dtype))
    if dtype == np.float32:
        assert_result_close(got, p.call(reference), **TOL[np.float32])


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("loss", ROBUST)
def test_core_matches_reference_in_blocks_and_halves(monkeypatch, loss, dtype):
    """Blocks of rows (accumulating GEMMs) and blocks cut in halves (split_rows): the
    same loss and gradient."""
    p = Robust(loss, sizes=(4, 6, 2), n=37, weighted=True, alpha=0.2,
               seed=seed_of("blocks", loss))
    ref = p.call(reference, dtype)
    for block in (5, 16):
        monkeypatch.setattr(core, "block_rows", lambda sizes, n_samples, b=block: b)
        with split_from(4):
            got = p.call(core, dtype)
        assert_result_close(got, ref, **tol(dtype), err_msg=f"block {block}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("loss", ROBUST)
def test_sparse_x_matches_reference(loss, dtype):
    p = Robust(loss, sizes=(6, 5, 2), n=23, weighted=True, alpha=0.3, sparse_x=True,
               seed=seed_of("csr", loss))
    ref = p.call(reference, dtype)
    coefs, intercepts, X, Y = p.args(dtype)
    Xs = sp.csr_matrix(X)
    assert Xs.nnz < X.size
    kw = p.kwargs(dtype)
    for cls_X in (X, Xs):
        f = core.LossGradient(p.sizes, cls_X, Y, **kw)
        v, g = f(flat_pack(coefs, intercepts).astype(dtype))
        assert_allclose(v, float(ref[0]), rtol=tol(dtype)["rtol"])
        assert_allclose(g, flat_grad(ref), rtol=tol(dtype)["rtol"],
                        atol=tol(dtype)["atol_factor"] * np.abs(flat_grad(ref)).max())


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 3, 2), (5, 1, 1), (2, 1, 4)],
                         ids=["1x1->1", "1 sample", "1 feature", "4 outputs"])
@pytest.mark.parametrize("loss", ROBUST)
def test_odd_shapes(loss, shape, dtype):
    n, n_features, n_out = shape
    p = Robust(loss, sizes=(n_features, 3, n_out), n=n, alpha=0.1, delta=0.5,
               seed=seed_of("odd", loss, shape))
    ref = p.call(reference, dtype)
    got = p.call(core, dtype)
    assert_result_close(got, ref, **tol(dtype))
    # and a network without hidden layers
    q = Robust(loss, sizes=(n_features, n_out), n=n, delta=0.5, seed=seed_of("o", shape))
    assert_result_close(q.call(core, dtype), q.call(reference, dtype), **tol(dtype))


@pytest.mark.parametrize("loss", ROBUST)
def test_multi_output_sums_over_outputs(loss):
    """Several outputs: the loss is the sum of the one-output losses (as squared_error)."""
    p = Robust(loss, sizes=(3, 4, 3), n=9, seed=5)
    total = float(p.call(core)[0])
    parts = []
    for k in range(3):
        coefs = [p.coefs[0], p.coefs[1][:, k:k + 1]]
        intercepts = [p.intercepts[0], p.intercepts[1][k:k + 1]]
        parts.append(float(core.loss_and_gradients(
            coefs, intercepts, p.X, p.Y[:, k:k + 1], activation="tanh", loss=loss,
            huber_delta=p.delta)[0]))
    assert_allclose(total, sum(parts), rtol=1e-12)


# =======================================================================================
# the kinks
# =======================================================================================

def _glm_at(Z_value, y, dtype, n_features=2):
    """A network with no hidden layer and X = 0: the logits are the intercepts exactly,
    so the residuals are exactly ``Z_value - y``."""
    n, c = y.shape
    coefs = [np.ones((n_features, c), dtype)]
    intercepts = [np.full(c, Z_value, dtype)]
    X = np.zeros((n, n_features), dtype)
    return coefs, intercepts, X, y.astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@MODULES
def test_absolute_error_gradient_is_zero_at_zero_residual(module, dtype):
    rng = np.random.default_rng(0)
    coefs, intercepts = make_network([3, 4, 2], dtype, seed=1)
    X = rng.normal(size=(7, 3)).astype(dtype)
    # Y = the network's own output, computed by the same module: every residual is 0
    Y = np.ascontiguousarray(module.forward(coefs, intercepts, X, activation="tanh",
                                            loss="absolute_error"))
    value, cg, ig = module.loss_and_gradients(coefs, intercepts, X, Y, activation="tanh",
                                              loss="absolute_error")
    assert float(value) == 0.0
    for g in cg + ig:
        assert_array_equal(g, 0.0)
    # some residuals 0, the others +-1: only those move the output intercepts
    Y2 = Y.copy()
    Y2[:3, 0] -= 1.0   # r = +1 (to rounding)
    Y2[5, 1] += 1.0    # r = -1
    sw = np.arange(1, 8).astype(dtype)
    value, cg, ig = module.loss_and_gradients(coefs, intercepts, X, Y2, activation="tanh",
                                              loss="absolute_error", sample_weight=sw)
    expected = np.array([(1 + 2 + 3) / 28, -6 / 28], dtype=np.float64)
    assert_allclose(ig[-1], expected, rtol=1e-6 if dtype == np.float32 else 1e-15)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@MODULES
def test_huber_at_the_delta_boundary(module, dtype):
    """At |r| = delta exactly the derivative is r = +-delta (both pieces agree); just
    inside it is r, just outside +-delta; the loss is continuous there."""
    delta = 0.5
    z = dtype(0.0)  # y = -r: exact residuals
    r_at = dtype(delta)
    inside = np.nextafter(r_at, dtype(0))
    outside = np.nextafter(r_at, dtype(1))
    rs = np.array([r_at, -r_at, inside, -inside, outside, -outside], dtype)
    y = (z - rs).reshape(-1, 1).astype(dtype)
    assert_array_equal(z - y.ravel(), rs)  # the residuals are exact
    coefs, intercepts, X, Y = _glm_at(z, y, dtype)
    for i, r in enumerate(rs):
        value, cg, ig = module.loss_and_gradients(
            coefs, intercepts, X[i:i + 1], Y[i:i + 1], activation="relu", loss="huber",
            huber_delta=delta)
        a = abs(float(r))
        grad_expected = r if a <= delta else np.sign(r) * dtype(delta)
        assert ig[0][0] == grad_expected, (i, r, ig[0][0])
        assert_array_equal(cg[0], 0.0)
        quad, lin = 0.5 * a * a, delta * (a - delta / 2)
        assert_allclose(float(value), quad if a <= delta else lin, rtol=1e-6)
        assert_allclose(quad, lin, rtol=1e-6)  # continuous at the boundary


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_huber_with_a_huge_delta_is_squared_error(dtype):
    p = Robust("huber", sizes=(3, 5, 2), n=11, weighted=True, alpha=0.3, delta=0.7,
               seed=3)
    assert (np.abs(p.R) > 0.7).any()  # huber's linear piece at delta 0.7, not at 1e30
    coefs, intercepts, X, Y = p.args(dtype)
    kw = dict(activation="tanh", alpha=0.3, sample_weight=p.sample_weight.astype(dtype))
    sq_core = core.loss_and_gradients(coefs, intercepts, X, Y, loss="squared_error", **kw)
    hu_core = core.loss_and_gradients(coefs, intercepts, X, Y, loss="huber",
                                      huber_delta=1e30, **kw)
    # the same arithmetic: bitwise
    assert float(hu_core[0]) == float(sq_core[0])
    for a, b in zip(hu_core[1] + hu_core[2], sq_core[1] + sq_core[2]):
        assert_array_equal(a, b)
    hu_ref = reference.loss_and_gradients(coefs, intercepts, X, Y, loss="huber",
                                          huber_delta=1e30, **kw)
    sq_ref = reference.loss_and_gradients(coefs, intercepts, X, Y, loss="squared_error",
                                          **kw)
    assert_result_close(hu_ref, sq_ref, rtol=1e-15, atol_factor=0)
    # infinity too, and a delta beyond float32's range (infinity there, without warnings)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for big in (np.inf, 1e300):
            hu_inf = core.loss_and_gradients(coefs, intercepts, X, Y, loss="huber",
                                             huber_delta=big, **kw)
            assert float(hu_inf[0]) == float(sq_core[0])
            hu_big = reference.loss_and_gradients(coefs, intercepts, X, Y, loss="huber",
                                                  huber_delta=big, **kw)
            assert_result_close(hu_big, sq_ref, rtol=1e-15, atol_factor=0)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@MODULES
def test_loss_scale_of_small_residuals_is_squared_errors(module, dtype):
    """All residuals within delta: huber's loss value and gradient are squared_error's
    (loss_curve_ on the same scale); absolute_error is the mean of |r| summed over
    outputs, the scale of squared_error's sum over outputs."""
    p = Robust("huber", sizes=(3, 4, 2), n=10, delta=1.0, seed=4)
    assert (np.abs(p.R) < 1.0).any() and (np.abs(p.R) > 1.0).any()
    p.Y = p.Y + p.R - 0.1 * p.R  # now every |r| < 0.31
    coefs, intercepts, X, Y = p.args(dtype)
    kw = dict(activation="tanh")
    hu = module.loss_and_gradients(coefs, intercepts, X, Y, loss="huber", **kw)
    sq = module.loss_and_gradients(coefs, intercepts, X, Y, loss="squared_error", **kw)
    assert_result_close(hu, sq, **tol(dtype))
    ab = module.loss_and_gradients(coefs, intercepts, X, Y, loss="absolute_error", **kw)
    assert_allclose(float(ab[0]), np.abs(0.1 * p.R).sum(axis=1).mean(),
                    rtol=tol(dtype)["rtol"] * 10)


# =======================================================================================
# argument checks
# =======================================================================================

@pytest.mark.parametrize("bad", [0, 0.0, -1.0, np.nan, "1", None, True])
@MODULES
def test_bad_huber_delta_raises(module, bad):
    p = Robust("huber", sizes=(3, 2), n=4)
    with pytest.raises(ValueError, match="huber_delta"):
        p.call(module, huber_delta=bad)
    with pytest.raises(ValueError, match="huber_delta"):  # checked for every loss
        p.call(module, loss="squared_error", huber_delta=bad)


@MODULES
def test_same_signature(module):
    import inspect

    a = inspect.signature(reference.loss_and_gradients)
    b = inspect.signature(core.loss_and_gradients)
    assert a == b
    assert a.parameters["huber_delta"].default == 1.0
    assert a.parameters["huber_delta"].kind is inspect.Parameter.KEYWORD_ONLY


def test_kernel_checks_loss_code_and_delta():
    p = Robust("huber", sizes=(3, 2), n=4)
    f = core.LossGradient(p.sizes, p.X, p.Y, activation="tanh", loss="huber")
    args = (f.sizes, f.activation, f.loss, f.params, f.X, f.Y, f.sample_weight, 0.0,
            f.grads, f.acts, f.deltas, f.rows, f.grads2, 1)
    f.params[:] = 0.0
    _kernels.loss_grad(*args, 0.5)
    with pytest.raises(ValueError, match="huber_delta"):
        _kernels.loss_grad(*args, 0.0)
    with pytest.raises(ValueError, match="huber_delta"):
        _kernels.loss_grad(*args, np.nan)
    bad = list(args)
    bad[2] = max(core.LOSS_CODES.values()) + 1
    with pytest.raises(ValueError, match="loss code"):
        _kernels.loss_grad(*bad)
    assert core.LOSS_CODES["huber"] != core.LOSS_CODES["absolute_error"]


@pytest.mark.parametrize("loss", ROBUST)
def test_forward_and_input_gradients_are_the_identity_output(loss):
    p = Robust(loss, sizes=(3, 4, 2), n=6)
    for module in (reference, core):
        out = module.forward(p.coefs, p.intercepts, p.X, activation="tanh", loss=loss)
        sq = module.forward(p.coefs, p.intercepts, p.X, activation="tanh",
                            loss="squared_error")
        assert_array_equal(out, sq)
        g = module.input_gradients(p.coefs, p.intercepts, p.X, activation="tanh", loss=loss)
        g_sq = module.input_gradients(p.coefs, p.intercepts, p.X, activation="tanh",
                                      loss="squared_error")
        assert_array_equal(g, g_sq)


# =======================================================================================
# training epochs: core Trainer vs a NumPy loop over the reference
# =======================================================================================

def numpy_epochs(p, params, dtype, hyper, loss, delta, batch_size, alpha, sw, orders):
    """What Trainer.run_epoch must do for these losses, with fastprop.reference."""
    params = params.copy()
    s1, s2, t = np.zeros_like(params), np.zeros_like(params), 0
    X, Y = p.args(dtype)[2:]
    accs = []
    for order in orders:
        idx = np.arange(len(X)) if order is None else order
        acc = 0.0
        for start in range(0, len(idx), batch_size):
            b = idx[start:start + batch_size]
            coefs, intercepts = flat_unpack(params, p.sizes)
            value, cg, ig = reference.loss_and_gradients(
                coefs, intercepts, X[b], Y[b], activation=p.activation, loss=loss,
                alpha=alpha, sample_weight=None if sw is None else sw[b], huber_delta=delta)
            g = flat_pack(cg, ig)
            acc += float(value) * len(b)
            if hyper["solver"] == "sgd":
                reference.sgd_update(params, g, s1, learning_rate=hyper["learning_rate"],
                                     momentum=hyper["momentum"], nesterov=hyper["nesterov"])
            else:
                t += 1
                reference.adam_update(params, g, s1, s2, t=t,
                                      learning_rate=hyper["learning_rate"],
                                      beta_1=hyper["beta_1"], beta_2=hyper["beta_2"],
                                      epsilon=hyper["epsilon"])
        accs.append(acc)
        yield params.copy(), acc


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("sparse_x", [False, True], ids=["dense", "csr"])
@pytest.mark.parametrize("solver", ["adam", "sgd-nesterov"])
@pytest.mark.parametrize("loss", ROBUST)
def test_trainer_matches_numpy_loop(loss, solver, sparse_x, dtype):
    p = Robust(loss, sizes=(4, 6, 5, 2), n=30, weighted=True, delta=0.4, sparse_x=sparse_x,
               seed=seed_of("tr", loss, solver, sparse_x))
    params = flat_pack(p.coefs, p.intercepts).astype(dtype)
    hyper = SOLVERS[solver]
    sw = p.sample_weight.astype(dtype)
    X, Y = p.args(dtype)[2:]
    Xc = core.csr_parts(sp.csr_matrix(X)) if sparse_x else X
    trainer = core.Trainer(p.sizes, p.activation, loss, params.copy(), huber_delta=0.4,
                           **hyper)
    rng = np.random.default_rng(1)
    orders = [None, rng.permutation(30).astype(np.intp), rng.permutation(30)[:17]]
    expect = numpy_epochs(p, params, dtype, hyper, loss, 0.4, 7, 0.3, sw, orders)
    for order, (exp_params, exp_acc) in zip(orders, expect):
        acc = trainer.run_epoch(Xc, Y, batch_size=7, alpha=0.3, sample_weight=sw,
                                order=order)
        assert_epoch_close(trainer.params, exp_params, dtype)
        assert_allclose(acc, exp_acc, rtol=EPOCH_TOL[np.dtype(dtype).type]["rtol"])
    assert not np.allclose(trainer.params, params)


@pytest.mark.parametrize("loss", ROBUST)
def test_trainer_partitions_match_whole_minibatches(loss):
    """Minibatches split by rows and cut by units give the whole minibatch's model (to
    rounding: the sums are grouped otherwise), dense and CSR."""
    p = Robust(loss, sizes=(8, 16, 12, 3), n=64, weighted=True, delta=0.3,
               sparse_x=True, seed=seed_of("parts", loss))
    X, Y = p.args()[2:]
    params = flat_pack(p.coefs, p.intercepts)
    sw = p.sample_weight
    order = np.random.default_rng(2).permutation(64).astype(np.intp)
    sizes = np.asarray(p.sizes, np.intp)

    def run(Xc):
        tr = core.Trainer(p.sizes, "tanh", loss, params.copy(), huber_delta=0.3,
                          **SOLVERS["adam"])
        for _ in range(2):
            tr.run_epoch(Xc, Y, batch_size=32, alpha=0.1, sample_weight=sw, order=order)
        return tr.params

    whole = run(X)
    assert _kernels.epoch_partition(sizes, 32)[0] == "whole"
    with split_from(2):
        assert _kernels.epoch_partition(sizes, 32)[0] == "rows"
        rows = run(X)
        csr = core.csr_parts(sp.csr_matrix(X))
        assert _kernels.epoch_partition(sizes, 32, csr[0].shape[0], 64)[0] == "rows"
        rows_csr = run(csr)
    with units_from(0):
        assert _kernels.epoch_partition(sizes, 32)[0] == "units"
        units = run(X)
    t = REORDER_TOL[np.float64]
    for got in (rows, rows_csr, units):
        assert_allclose(got, whole, rtol=t["rtol"] * 1e3, atol=t["atol_factor"] * 1e3)


def test_trainer_pickles_huber_delta():
    p = Robust("huber", sizes=(3, 4, 1), n=20, delta=0.3)
    params = flat_pack(p.coefs, p.intercepts)
    tr = core.Trainer(p.sizes, "tanh", "huber", params.copy(), huber_delta=0.3,
                      **SOLVERS["sgd"])
    tr.run_epoch(p.X, p.Y, batch_size=5)
    tr2 = pickle.loads(pickle.dumps(tr))
    assert tr2.huber_delta == 0.3 and tr2.loss == "huber"
    tr2.params = tr.params.copy()
    tr.run_epoch(p.X, p.Y, batch_size=5)
    tr2.run_epoch(p.X, p.Y, batch_size=5)
    assert_array_equal(tr2.params, tr.params)
    with pytest.raises(ValueError, match="huber_delta"):
        core.Trainer(p.sizes, "tanh", "huber", params.copy(), "sgd", huber_delta=-1.0)


def test_trainer_with_a_huge_delta_is_squared_error_bitwise():
    p = Robust("huber", sizes=(3, 5, 2), n=40, weighted=True, seed=9, delta=0.5)
    params = flat_pack(p.coefs, p.intercepts)
    res = []
    for loss, kw in (("squared_error", {}), ("huber", {"huber_delta": 1e300})):
        tr = core.Trainer(p.sizes, "tanh", loss, params.copy(), **kw, **SOLVERS["adam"])
        acc = tr.run_epoch(p.X, p.Y, batch_size=8, alpha=0.1,
                           sample_weight=p.sample_weight)
        res.append((tr.params, acc))
    assert_array_equal(res[0][0], res[1][0])
    assert res[0][1] == res[1][1]


# =======================================================================================
# the estimator
# =======================================================================================

def _data(n=200, seed=0, outliers=True, n_out=1):
    rng = np.random.RandomState(seed)
    X = rng.randn(n, 4)
    y = X[:, 0] - 0.5 * X[:, 1] + 0.05 * rng.randn(n)
    if n_out > 1:
        y = np.c_[y, X[:, 2]]
    if outliers:
        y[:8] += 40.0
    return X, y


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("sparse_x", [False, True], ids=["dense", "csr"])
@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs"])
@pytest.mark.parametrize("loss", ROBUST)
def test_estimator_fits_robustly(loss, solver, sparse_x):
    X, y = _data()
    Xf = sp.csr_matrix(X) if sparse_x else X
    kw = dict(hidden_layer_sizes=(8,), solver=solver, max_iter=150, random_state=0,
              learning_rate_init=0.01)
    robust = MLPRegressor(loss=loss, huber_delta=0.5, **kw).fit(Xf, y)
    plain = MLPRegressor(**kw).fit(Xf, y)
    clean = slice(8, None)
    # the outliers pull squared_error's fit; the robust losses fit the clean rows
    assert robust.score(Xf[clean], y[clean]) > 0.8
    assert robust.score(Xf[clean], y[clean]) > plain.score(Xf[clean], y[clean])
    assert np.isfinite(robust.loss_)
    if solver != "lbfgs":
        assert len(robust.loss_curve_) == robust.n_iter_
        assert robust.loss_curve_[-1] < robust.loss_curve_[0]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs"])
def test_estimator_loss_is_the_core_loss(solver):
    """loss_ is the core's loss at the fitted model (L-BFGS) / on the squared_error
    scale; a huge huber_delta gives squared_error's fit bitwise."""
    X, y = _data(n=120, n_out=2)
    kw = dict(hidden_layer_sizes=(6,), solver=solver, max_iter=20, random_state=0)
    sq = MLPRegressor(**kw).fit(X, y)
    hu = MLPRegressor(loss="huber", huber_delta=1e300, **kw).fit(X, y)
    for a, b in zip(sq.coefs_ + sq.intercepts_, hu.coefs_ + hu.intercepts_):
        assert_array_equal(a, b)
    assert sq.loss_ == hu.loss_
    if solver != "lbfgs":
        assert sq.loss_curve_ == hu.loss_curve_
    ab = MLPRegressor(loss="absolute_error", **kw).fit(X, y)
    if solver == "lbfgs":
        value = core.loss_and_gradients(ab.coefs_, ab.intercepts_, X, y,
                                        activation="relu", loss="absolute_error",
                                        alpha=ab.alpha)[0]
        assert_allclose(ab.loss_, value, rtol=1e-10)


@pytest.mark.parametrize("loss", ROBUST)
def test_partial_fit_warm_start_and_pickle(loss):
    X, y = _data(n=150)
    kw = dict(loss=loss, huber_delta=0.7, hidden_layer_sizes=(5,), random_state=0,
              batch_size=32)
    a = MLPRegressor(**kw)
    for _ in range(3):
        a.partial_fit(X, y)
    b = pickle.loads(pickle.dumps(a))
    assert b.huber_delta == 0.7 and b.loss == loss
    a.partial_fit(X, y)
    b.partial_fit(X, y)
    for u, v in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        assert_array_equal(u, v)
    assert np.isfinite(a.loss_)

    # warm_start: two fits of max_iter epochs are one fit's continuation, with the loss
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w = MLPRegressor(max_iter=3, warm_start=True, shuffle=False, tol=0, **kw).fit(X, y)
        w.fit(X, y)
        one = MLPRegressor(max_iter=3, warm_start=True, shuffle=False, tol=0,
                           **{**kw, "loss": "squared_error"}).fit(X, y)
    assert len(w.loss_curve_) == 6
    assert not np.allclose(w.coefs_[0], one.coefs_[0])


def test_partial_fit_reads_huber_delta_at_each_call():
    X, y = _data(n=100)
    kw = dict(loss="huber", hidden_layer_sizes=(5,), random_state=0, batch_size=20,
              solver="sgd")
    a = MLPRegressor(huber_delta=0.5, **kw).partial_fit(X, y)
    b = MLPRegressor(huber_delta=0.5, **kw).partial_fit(X, y)
    a.partial_fit(X, y)
    b.set_params(huber_delta=0.2).partial_fit(X, y)
    assert not np.array_equal(a.coefs_[0], b.coefs_[0])
    c = MLPRegressor(huber_delta=0.5, **kw).partial_fit(X, y)
    c.set_params(huber_delta=0.5).partial_fit(X, y)
    assert_array_equal(a.coefs_[0], c.coefs_[0])


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_estimator_float32(dtype):
    X, y = _data(n=100)
    m = MLPRegressor(loss="huber", hidden_layer_sizes=(5,), max_iter=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.fit(X.astype(dtype), y.astype(dtype))
    assert m.coefs_[0].dtype == dtype
    assert m.predict(X.astype(dtype)).dtype == dtype


@pytest.mark.parametrize("bad", [0, 0.0, -0.5, "1"])
def test_invalid_huber_delta(bad):
    X, y = _data(n=20)
    with pytest.raises(InvalidParameterError, match="huber_delta"):
        MLPRegressor(loss="huber", huber_delta=bad, max_iter=2).fit(X, y)


@pytest.mark.parametrize("bad", ["hinge", "Huber", "l1", None])
def test_invalid_loss(bad):
    X, y = _data(n=20)
    with pytest.raises(InvalidParameterError, match="loss"):
        MLPRegressor(loss=bad, max_iter=2).fit(X, y)


def test_classifier_is_unchanged():
    assert "huber_delta" not in MLPClassifier().get_params()
    p = MLPRegressor().get_params()
    assert p["huber_delta"] == 1.0 and p["loss"] == "squared_error"
    import inspect

    assert "huber_delta" in inspect.signature(MLPRegressor).parameters
    assert "huber_delta" in MLPRegressor.__doc__


@pytest.mark.parametrize("loss", ROBUST)
def test_to_sklearn_raises(loss):
    X, y = _data(n=30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = MLPRegressor(loss=loss, hidden_layer_sizes=(3,), max_iter=3).fit(X, y)
    with pytest.raises(ValueError, match=loss):
        m.to_sklearn()
    # huber_delta is read by huber only: a squared_error model with another value is
    # scikit-learn's, and predicts the same there
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = MLPRegressor(huber_delta=0.3, hidden_layer_sizes=(3,), max_iter=3,
                         random_state=0).fit(X, y)
    sk = m.to_sklearn()
    assert_allclose(sk.predict(X), m.predict(X), rtol=1e-12, atol=1e-14)
    back = MLPRegressor.from_sklearn(sk)
    assert back.huber_delta == 1.0 and back.loss == "squared_error"


@pytest.mark.parametrize("loss", ROBUST)
def test_predict_and_input_gradients_use_the_identity_output(loss):
    X, y = _data(n=40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = MLPRegressor(loss=loss, hidden_layer_sizes=(4,), max_iter=5,
                         random_state=0).fit(X, y)
    assert m.out_activation_ == "identity"
    out = reference.forward(m.coefs_, m.intercepts_, X, activation="relu",
                            loss="squared_error")
    assert_allclose(m.predict(X), out.ravel(), rtol=1e-12)
    g = reference.input_gradients(m.coefs_, m.intercepts_, X, activation="relu",
                                  loss="squared_error")
    assert_allclose(m.input_gradients(X), g, rtol=1e-12, atol=1e-14)


def test_onnx_export_of_a_robust_model():
    pytest.importorskip("skl2onnx")
    ort = pytest.importorskip("onnxruntime")
    from fastprop.onnx import to_onnx

    X, y = _data(n=40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = MLPRegressor(loss="huber", hidden_layer_sizes=(4,), max_iter=5,
                         random_state=0).fit(X.astype(np.float32), y)
    onx = to_onnx(m, X[:1].astype(np.float32))
    sess = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: X.astype(np.float32)})[0]
    assert_allclose(got.ravel(), m.predict(X.astype(np.float32)), rtol=1e-5, atol=1e-5)
