"""Training options scikit-learn's MLP does not have: gradient clipping
(``max_grad_norm``), class weights (``class_weight``), the validation loss curve and
early stopping on the loss or a scorer (``scoring``).

Clipping is held against a NumPy loop over the reference (``reference.clip_grad_norm``
on the reference gradient) in every kind of pass, and against the same bits for every
thread count; the estimator options against what they are defined to equal."""

import pickle
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.datasets import make_classification, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import log_loss
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.class_weight import compute_sample_weight

import fastprop.core as core
from fastprop import MLPClassifier, MLPRegressor, reference
from fastprop.core import _kernels

from .helpers import (
    DTYPES,
    EPOCH_TOL,
    flat_pack,
    flat_unpack,
    kernel_setting,
    make_problem,
    seed_of,
    split_from,
    units_from,
)
from .test_any_threads import _run

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _same(a, b):
    return all(np.array_equal(p, q) for p, q in
               zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_))


# =======================================================================================
# max_grad_norm
# =======================================================================================


def test_reference_clip_grad_norm():
    g = np.array([3.0, 4.0])
    assert reference.clip_grad_norm(g, max_norm=10.0) == 5.0
    assert_array_equal(g, [3.0, 4.0])  # shorter than the limit: unchanged
    assert reference.clip_grad_norm(g, max_norm=1.0) == 5.0
    assert_allclose(g, [0.6, 0.8])
    assert_allclose(np.linalg.norm(g), 1.0)
    g32 = np.array([1e20, 1e20], dtype=np.float32)  # the norm is taken in float64
    reference.clip_grad_norm(g32, max_norm=2.0)
    assert g32.dtype == np.float32 and np.all(np.isfinite(g32))
    assert_allclose(np.linalg.norm(g32.astype(np.float64)), 2.0, rtol=1e-6)


class _ClippedLoop:
    """What Trainer.run_epoch with max_grad_norm does, written with the reference:
    the minibatch's normalised gradient (L2 term included), clipped, then the step."""

    def __init__(self, sizes, activation, loss, params, solver, max_norm, lr=0.05):
        self.sizes, self.activation, self.loss = sizes, activation, loss
        self.params, self.solver, self.max_norm, self.lr = params, solver, max_norm, lr
        self.s1, self.s2, self.t = np.zeros_like(params), np.zeros_like(params), 0
        self.norms = []

    def run_epoch(self, X, Y, batch_size, alpha, sample_weight, order):
        for start in range(0, len(order), batch_size):
            b = order[start:start + batch_size]
            coefs, intercepts = flat_unpack(self.params, self.sizes)
            _, cg, ig = reference.loss_and_gradients(
                coefs, intercepts, X[b], Y[b], activation=self.activation,
                loss=self.loss, alpha=alpha,
                sample_weight=None if sample_weight is None else sample_weight[b])
            g = flat_pack(cg, ig)
            self.norms.append(reference.clip_grad_norm(g, max_norm=self.max_norm))
            if self.solver == "sgd":
                reference.sgd_update(self.params, g, self.s1, learning_rate=self.lr,
                                     momentum=0.9, nesterov=True)
            else:
                self.t += 1
                reference.adam_update(self.params, g, self.s1, self.s2, t=self.t,
                                      learning_rate=self.lr, beta_1=0.9, beta_2=0.999,
                                      epsilon=1e-8)


PASSES = {
    # kind: (sizes, batch, the kernel setting that makes the shapes take that pass)
    "whole": ((6, 9, 3), 16, None),
    "rows": ((6, 9, 3), 16, lambda: split_from(4)),
    "units": ((6, 40, 24, 3), 16, lambda: units_from(0)),
}


@pytest.mark.parametrize("solver", ["sgd", "adam"])
@pytest.mark.parametrize(
    "kind, sparse",
    # a sparse X is never cut by units (train_epoch_csr)
    [("whole", False), ("rows", False), ("units", False), ("whole", True), ("rows", True)],
    ids=["whole", "rows", "units", "whole-csr", "rows-csr"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_clipped_epoch_matches_the_reference(dtype, kind, sparse, solver):
    sizes, batch, setting = PASSES[kind]
    p = make_problem(n_samples=61, sizes=sizes, activation="tanh", loss="log_loss",
                     dtype=dtype, weighted=True, seed=seed_of("clip", kind, solver))
    params = p.flat().astype(dtype) * 3  # large weights: long gradients, clipped
    order = np.random.default_rng(1).permutation(61).astype(np.intp)
    loop = _ClippedLoop(list(sizes), "tanh", "log_loss", params.copy(), solver, 0.5)
    loop.run_epoch(p.X, p.Y, batch, 0.01, p.sample_weight, order)
    assert any(n > 0.5 for n in loop.norms)  # clipping acts
    trainer = core.Trainer(list(sizes), "tanh", "log_loss", params.copy(), solver,
                           learning_rate=0.05, max_grad_norm=0.5)
    X = core.csr_parts(sp.csr_matrix(p.X)) if sparse else p.X
    with (setting() if setting else kernel_setting(lambda v: v, None)):
        part = (_kernels.epoch_partition(np.array(sizes, np.intp), batch,
                                         X[0].shape[0], 61) if sparse
                else _kernels.epoch_partition(np.array(sizes, np.intp), batch))
        assert part[0] == kind, part
        trainer.run_epoch(X, p.Y, batch_size=batch, alpha=0.01,
                          sample_weight=p.sample_weight, order=order)
    t = EPOCH_TOL[np.dtype(dtype).type]
    assert_allclose(trainer.params, loop.params, rtol=t["rtol"] * 10,
                    atol=t["atol_factor"] * 10 * np.abs(loop.params).max())


def test_clipping_off_and_huge_limits_change_nothing():
    """max_grad_norm=None is the fused path, bitwise as before; a limit no gradient
    reaches takes the unfused path, whose step is the same arithmetic."""
    X, y = make_classification(300, 12, n_classes=3, n_informative=6, random_state=0)
    base = MLPClassifier((20,), max_iter=5, random_state=0).fit(X, y)
    none = MLPClassifier((20,), max_iter=5, random_state=0, max_grad_norm=None).fit(X, y)
    huge = MLPClassifier((20,), max_iter=5, random_state=0, max_grad_norm=1e30).fit(X, y)
    assert _same(base, none)
    for a, b in zip(base.coefs_ + base.intercepts_, huge.coefs_ + huge.intercepts_):
        assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    tight = MLPClassifier((20,), max_iter=5, random_state=0, max_grad_norm=1e-3).fit(X, y)
    assert not _same(base, tight)


def test_clipping_bounds_the_first_step():
    """One full-batch SGD step without momentum moves the weights by exactly
    lr * clip(g): its length is lr * max_grad_norm."""
    X, y = make_regression(50, 4, random_state=0)
    kw = dict(hidden_layer_sizes=(5,), solver="sgd", momentum=0.0, batch_size=50,
              shuffle=False, learning_rate_init=0.1, random_state=0, max_iter=1)
    # the initial weights: a step of 1e-300 leaves every weight as drawn
    init = MLPRegressor(**{**kw, "learning_rate_init": 1e-300}).fit(X, y)
    w0 = flat_pack(init.coefs_, init.intercepts_)
    _, cg, ig = reference.loss_and_gradients(
        init.coefs_, init.intercepts_, X, y.reshape(-1, 1), activation="relu",
        loss="squared_error", alpha=1e-4)
    g = flat_pack(cg, ig)
    assert np.linalg.norm(g) > 1.0
    reference.clip_grad_norm(g, max_norm=1.0)
    clipped = MLPRegressor(**kw, max_grad_norm=1.0).fit(X, y)
    w1 = flat_pack(clipped.coefs_, clipped.intercepts_)
    assert_allclose(w1, w0 - 0.1 * g, rtol=1e-10, atol=1e-12)
    assert_allclose(np.linalg.norm(w1 - w0), 0.1, rtol=1e-10)


CLIPPED_FITS = """
import hashlib, json, warnings
import numpy as np, scipy.sparse as sp
from fastprop import MLPClassifier
from fastprop.core import _kernels
warnings.simplefilter("ignore")
rng = np.random.RandomState(0)
X = rng.randn(1500, 100)
y = rng.randint(0, 3, len(X))
out = []
for dtype in (np.float32, np.float64):
    for hidden, batch, solver, sparse in [((64,), 32, "adam", False),
                                          ((256,), 256, "adam", False),
                                          ((128, 64), 200, "sgd", False),
                                          ((512, 512), 100, "adam", False),
                                          ((256,), 512, "sgd", True)]:
        Xd = (sp.csr_matrix(np.where(np.abs(X) > 1.2, X, 0.0)) if sparse else X)
        est = MLPClassifier(hidden_layer_sizes=hidden, batch_size=batch, solver=solver,
                            max_iter=2, random_state=0, tol=0, max_grad_norm=0.5)
        est.fit(Xd.astype(dtype), y)
        sizes = np.array([100, *hidden, 3], dtype=np.intp)
        part = (_kernels.epoch_partition(sizes, batch, Xd.nnz, 1500) if sparse
                else _kernels.epoch_partition(sizes, batch))
        h = hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes()
                                    for a in est.coefs_ + est.intercepts_)).hexdigest()
        out.append([part[0], part[1], h])
print(json.dumps(out))
"""


@pytest.mark.skipif(not _kernels.HAS_OPENMP, reason="built without OpenMP: one thread")
def test_clipped_fits_are_bitwise_the_same_for_any_thread_count():
    runs = {p: _run(CLIPPED_FITS, p) for p in (1, 2, 3, 8)}
    assert {r[0] for r in runs[1]} == {"whole", "rows", "units"}, runs[1]
    for p, run in runs.items():
        assert run == runs[1], p
    assert len({r[2] for r in runs[1]}) == len(runs[1])


def test_max_grad_norm_parameter():
    X, y = make_classification(100, 5, random_state=0)
    for bad in (0, -1.0, "1"):
        with pytest.raises(InvalidParameterError, match="max_grad_norm"):
            MLPClassifier(max_grad_norm=bad).fit(X, y)
    # partial_fit, warm_start and pickling keep it; set_params reaches a kept optimizer
    a = MLPClassifier((8,), random_state=0, max_grad_norm=0.1)
    b = MLPClassifier((8,), random_state=0, max_grad_norm=0.1)
    for _ in range(3):
        a.partial_fit(X, y, classes=[0, 1])
    b.partial_fit(X, y, classes=[0, 1])
    b = pickle.loads(pickle.dumps(b))
    b.partial_fit(X, y)
    b.partial_fit(X, y)
    assert _same(a, b)
    c = MLPClassifier((8,), random_state=0, max_grad_norm=0.1)
    c.partial_fit(X, y, classes=[0, 1])
    c.set_params(max_grad_norm=None)
    c.partial_fit(X, y)
    d = MLPClassifier((8,), random_state=0, max_grad_norm=0.1)
    d.partial_fit(X, y, classes=[0, 1])
    d.partial_fit(X, y)
    assert not _same(c, d)
    warm = MLPClassifier((8,), random_state=0, max_grad_norm=0.1, max_iter=3,
                         warm_start=True).fit(X, y)
    warm.fit(X, y)
    assert warm.n_iter_ == 3


# =======================================================================================
# class_weight
# =======================================================================================


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_balanced_class_weight_is_balanced_sample_weight(dtype):
    X, y = make_classification(300, 8, n_classes=3, n_informative=4,
                               weights=[0.6, 0.3, 0.1], random_state=0)
    X = X.astype(dtype)
    a = MLPClassifier((16,), max_iter=10, random_state=0, class_weight="balanced").fit(X, y)
    b = MLPClassifier((16,), max_iter=10, random_state=0).fit(
        X, y, sample_weight=compute_sample_weight("balanced", y))
    assert _same(a, b)
    plain = MLPClassifier((16,), max_iter=10, random_state=0).fit(X, y)
    assert not _same(a, plain)
    # binary, string labels, L-BFGS
    yb = np.where(y == 0, "a", "b")
    a = MLPClassifier((8,), solver="lbfgs", max_iter=20, random_state=0,
                      class_weight="balanced").fit(X, yb)
    b = MLPClassifier((8,), solver="lbfgs", max_iter=20, random_state=0).fit(
        X, yb, sample_weight=compute_sample_weight("balanced", yb))
    assert _same(a, b)


def test_class_weight_dict_multiplies_sample_weight():
    X, y = make_classification(200, 6, n_classes=3, n_informative=4, random_state=1)
    sw = np.random.default_rng(0).uniform(0.5, 2, 200)
    cw = {0: 2.0, 2: 0.5}  # class 1 keeps weight 1
    a = MLPClassifier((8,), max_iter=5, random_state=0, class_weight=cw).fit(
        X, y, sample_weight=sw)
    b = MLPClassifier((8,), max_iter=5, random_state=0).fit(
        X, y, sample_weight=sw * np.array([2.0, 1.0, 0.5])[y])
    assert _same(a, b)
    # partial_fit takes a dict, as SGDClassifier
    c = MLPClassifier((8,), random_state=0, class_weight=cw)
    c.partial_fit(X, y, classes=[0, 1, 2])
    d = MLPClassifier((8,), random_state=0)
    d.partial_fit(X, y, classes=[0, 1, 2], sample_weight=np.array([2.0, 1.0, 0.5])[y])
    assert _same(c, d)
    assert _same(pickle.loads(pickle.dumps(c)), c)


def test_class_weight_errors():
    X, y = make_classification(100, 5, random_state=0)
    with pytest.raises(InvalidParameterError, match="class_weight"):
        MLPClassifier(class_weight="auto").fit(X, y)
    with pytest.raises(ValueError, match="not supported for partial_fit"):
        MLPClassifier(class_weight="balanced").partial_fit(X, y, classes=[0, 1])
    with pytest.raises(ValueError, match="not in class_weight|not present"):
        MLPClassifier(class_weight={5: 1.0}, max_iter=2).fit(X, y)
    Y = np.stack([y, 1 - y, y], axis=1)
    with pytest.raises(ValueError, match="multilabel"):
        MLPClassifier(class_weight={0: 2.0}, max_iter=2).fit(X, Y)
    # the regressor has no class_weight
    assert "class_weight" not in MLPRegressor().get_params()


# =======================================================================================
# validation_loss_curve_ and scoring
# =======================================================================================


def test_validation_loss_curve_is_the_data_loss_on_the_split():
    X, y = make_classification(400, 8, n_classes=3, n_informative=5, random_state=0)
    est = MLPClassifier((16,), early_stopping=True, random_state=0, max_iter=30,
                        scoring="neg_log_loss", n_iter_no_change=1000).fit(X, y)
    assert len(est.validation_loss_curve_) == est.n_iter_ == 30
    # the last epoch's loss, recomputed from the final weights (no best-weights restore
    # happened: the last epoch is not necessarily the best, so recompute from a refit
    # without early-stopping restore)
    # neg_log_loss on the split is the negative of the data loss (log_loss from logits)
    assert_allclose(est.validation_scores_, -np.array(est.validation_loss_curve_),
                    rtol=1e-7)
    # without the L2 term: a huge alpha does not show in the curve's scale
    assert MLPClassifier().get_params()["scoring"] is None
    plain = MLPClassifier((16,), random_state=0, max_iter=3).fit(X, y)
    assert plain.validation_loss_curve_ is None


def test_validation_loss_matches_reference_and_has_no_l2_term():
    X, y = make_regression(300, 5, noise=5, random_state=0)
    y = y / 100
    est = MLPRegressor(hidden_layer_sizes=(8,), early_stopping=True, random_state=0, max_iter=4, alpha=10.0,
                       n_iter_no_change=1000, tol=0).fit(X, y)
    # recompute the split as the estimator did, then the last epoch's loss
    from sklearn.model_selection import train_test_split

    rs = np.random.RandomState(0)
    for fan_in, fan_out in zip([5, 8], [8, 1]):  # the draws of the initialisation
        rs.uniform(size=(fan_in, fan_out))
        rs.uniform(size=fan_out)
    _, val = train_test_split(np.arange(300), random_state=rs, test_size=0.1)
    # the best epoch's weights are restored: compare the curve's minimum at them
    best = int(np.argmax(est.validation_scores_))
    value, _, _ = reference.loss_and_gradients(
        est.coefs_, est.intercepts_, X[val], y[val].reshape(-1, 1),
        activation="relu", loss="squared_error", alpha=0.0)
    assert_allclose(est.validation_loss_curve_[best], value, rtol=1e-10)
    assert est.validation_loss_curve_[-1] < est.loss_curve_[-1]  # loss_ has the L2 term


def test_scoring_none_keeps_scikit_learns_stopping_exactly():
    X, y = make_classification(400, 8, random_state=0)
    a = MLPClassifier((16,), early_stopping=True, random_state=0).fit(X, y)
    b = MLPClassifier((16,), early_stopping=True, random_state=0, scoring=None).fit(X, y)
    from sklearn.neural_network import MLPClassifier as SkMLP

    s = SkMLP((16,), early_stopping=True, random_state=0).fit(X, y)
    assert a.validation_scores_ == b.validation_scores_
    assert a.n_iter_ == s.n_iter_
    assert_allclose(a.validation_scores_, s.validation_scores_)


def test_scoring_loss_stops_on_the_loss_and_keeps_the_best_epoch():
    X, y = make_classification(300, 10, n_classes=3, n_informative=5, flip_y=0.3,
                               random_state=0)
    est = MLPClassifier((64,), early_stopping=True, random_state=0, scoring="loss",
                        learning_rate_init=0.01, max_iter=500, n_iter_no_change=5,
                        tol=1e-4).fit(X, y)
    curve = np.array(est.validation_loss_curve_)
    assert_array_equal(est.validation_scores_, -curve)
    assert est.best_validation_score_ == -curve.min()
    best = int(np.argmin(curve))
    # stopped n_iter_no_change + 1 epochs after the last improvement by more than tol
    assert est.n_iter_ < 500
    # the model holds the best epoch's weights: refit to that epoch and compare
    again = MLPClassifier((64,), early_stopping=True, random_state=0, scoring="loss",
                          learning_rate_init=0.01, max_iter=best + 1,
                          n_iter_no_change=1000, tol=1e-4).fit(X, y)
    assert_allclose(again.validation_loss_curve_[-1], curve[best], rtol=1e-12)
    assert _same(est, again)


def test_scoring_with_a_scorer_name_or_callable():
    X, y = make_classification(300, 8, random_state=0)
    est = MLPClassifier((8,), early_stopping=True, random_state=0, max_iter=20,
                        scoring="roc_auc").fit(X, y)
    assert all(0 <= s <= 1 for s in est.validation_scores_)
    calls = []

    def scorer(model, X_val, y_val):
        calls.append(len(y_val))
        return -log_loss(y_val, model.predict_proba(X_val))

    est = MLPClassifier((8,), early_stopping=True, random_state=0, max_iter=20,
                        scoring=scorer).fit(X, y)
    assert len(calls) == est.n_iter_ and set(calls) == {30}
    assert_allclose(est.validation_scores_, -np.array(est.validation_loss_curve_),
                    rtol=1e-6)
    with pytest.raises(InvalidParameterError, match="scoring"):
        MLPClassifier(scoring="no_such_scorer").fit(X, y)
    r = MLPRegressor(hidden_layer_sizes=(8,), early_stopping=True, random_state=0, max_iter=5,
                     scoring="neg_mean_absolute_error").fit(X, y.astype(float))
    assert all(s <= 0 for s in r.validation_scores_)
    assert clone(r).get_params()["scoring"] == "neg_mean_absolute_error"
    assert pickle.loads(pickle.dumps(r)).validation_loss_curve_ == r.validation_loss_curve_
