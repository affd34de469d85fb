"""scikit-learn's callbacks (``sklearn.callback``, scikit-learn >= 1.9) on the estimators.

The tests marked ``requires_callbacks`` need ``sklearn.callback`` and are skipped on an
older scikit-learn; the others run on every supported version and show that without
callbacks nothing changes.
"""

import importlib.util
import pickle
import re
import warnings

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from sklearn.base import clone
from sklearn.datasets import make_classification, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import fastprop._callbacks as fp_callbacks
from fastprop import MLPClassifier, MLPRegressor

HAVE_CALLBACKS = importlib.util.find_spec("sklearn.callback") is not None


@pytest.fixture
def skcb():
    """``sklearn.callback``; skips the test where scikit-learn has none."""
    return pytest.importorskip("sklearn.callback")


X_CLF, Y_CLF = make_classification(
    n_samples=120, n_features=6, n_informative=4, n_classes=3, random_state=0)
X_REG, Y_REG = make_regression(n_samples=120, n_features=5, noise=0.5, random_state=0)
Y_REG = Y_REG / Y_REG.std()

ITERATION_TASKS = ("epoch", "lbfgs-iter")


def layers(est):
    return list(est.coefs_) + list(est.intercepts_)


def assert_same_model(a, b):
    assert a.n_iter_ == b.n_iter_
    for x, y in zip(layers(a), layers(b)):
        assert x.dtype == y.dtype
        assert_array_equal(x, y)
    assert a.loss_ == b.loss_
    assert getattr(a, "loss_curve_", None) == getattr(b, "loss_curve_", None)
    assert getattr(a, "validation_scores_", None) == getattr(b, "validation_scores_", None)


def quiet_fit(est, X, y, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y, **kw)


class Recorder:
    """A FitCallback recording every hook call; ``stop_at``: on_fit_task_end returns
    True at the end of that iteration (1-based); ``keep``: keeps the fitted_estimator
    of each iteration's end."""

    def __init__(self, stop_at=None, keep=False):
        self.stop_at = stop_at
        self.keep = keep
        self.events = []
        self.fitted = []

    def setup(self, estimator, context):
        self.events.append(("setup", None, None))

    def teardown(self, estimator, context):
        self.events.append(("teardown", None, None))

    def on_fit_task_begin(self, estimator, context, *, X=None, y=None, metadata=None,
                          fitted_estimator=None):
        self.events.append(("begin", context.task_name, context.task_id))

    def on_fit_task_end(self, estimator, context, *, X=None, y=None, metadata=None,
                        fitted_estimator=None):
        self.events.append(("end", context.task_name, context.task_id))
        if context.task_name in ITERATION_TASKS:
            if self.keep:
                self.fitted.append(fitted_estimator)
            return self.stop_at is not None and context.task_id + 1 == self.stop_at
        return False

    def iterations(self, kind="end"):
        return [e for e in self.events if e[0] == kind and e[1] in ITERATION_TASKS]


class Inert:
    """A FitCallback that asks for everything and changes nothing."""

    def setup(self, estimator, context):
        pass

    def teardown(self, estimator, context):
        pass

    def on_fit_task_begin(self, estimator, context, *, X=None, y=None, metadata=None,
                          fitted_estimator=None):
        pass

    def on_fit_task_end(self, estimator, context, *, X=None, y=None, metadata=None,
                        fitted_estimator=None):
        if fitted_estimator is not None:
            fitted_estimator.predict(X)
        return False


# -- every scikit-learn version: without callbacks nothing changes -------------------------


def test_set_callbacks_only_where_scikit_learn_has_callbacks():
    assert fp_callbacks.CALLBACKS_SUPPORTED is HAVE_CALLBACKS
    for Est in (MLPClassifier, MLPRegressor):
        assert hasattr(Est(), "set_callbacks") is HAVE_CALLBACKS
        # no new parameter either way
        assert "callbacks" not in Est().get_params()


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_fit_without_callbacks_makes_no_callback_call(monkeypatch, solver):
    """Without callbacks the hooks never get past their None test: no driver, no
    context, and no bookkeeping left on the model."""

    def fail(*args, **kwargs):  # pragma: no cover - the failure being tested
        raise AssertionError("a callback driver was created without callbacks")

    monkeypatch.setattr(fp_callbacks.FitCallbacks, "__init__", fail)
    est = quiet_fit(MLPClassifier(hidden_layer_sizes=(5,), max_iter=5, solver=solver,
                                  random_state=0), X_CLF, Y_CLF)
    if solver != "lbfgs":
        est.partial_fit(X_CLF, Y_CLF)
    for name in ("_callback_fit_ctx", "_skl_callbacks_to_teardown", "_skl_callbacks"):
        assert name not in est.__dict__


def test_callbacks_ignored_where_scikit_learn_has_none(monkeypatch):
    """A model carrying callbacks fits as one without where scikit-learn has no
    sklearn.callback (simulated here on any version)."""
    monkeypatch.setattr(fp_callbacks, "CALLBACKS_SUPPORTED", False)
    ref = quiet_fit(MLPRegressor(hidden_layer_sizes=(4,), max_iter=6, random_state=0),
                    X_REG, Y_REG)
    est = MLPRegressor(hidden_layer_sizes=(4,), max_iter=6, random_state=0)
    rec = Recorder(stop_at=2)
    est.__dict__["_skl_callbacks"] = [rec]
    quiet_fit(est, X_REG, Y_REG)
    assert rec.events == []
    assert_same_model(est, ref)


# -- scikit-learn >= 1.9 -------------------------------------------------------------------


@pytest.mark.parametrize("solver,early_stopping", [  # early stopping: stochastic solvers
    ("adam", False), ("sgd", False), ("lbfgs", False), ("adam", True), ("sgd", True)])
def test_inert_callback_changes_nothing(skcb, solver, early_stopping):
    """A callback that looks at every epoch's model (a copy of it) leaves the fit
    bitwise as it is without: weights, curves, optimizer state (the next partial_fit)
    and the user's RandomState."""
    models = []
    for callbacks in ([], [Inert()]):
        rng = np.random.RandomState(3)
        est = MLPClassifier(hidden_layer_sizes=(6,), max_iter=12, solver=solver,
                            early_stopping=early_stopping, random_state=rng)
        est.set_callbacks(*callbacks)
        quiet_fit(est, X_CLF, Y_CLF)
        if solver != "lbfgs" and not early_stopping:
            est.partial_fit(X_CLF, Y_CLF)
        models.append((est, rng.randint(1 << 30)))
    (a, ra), (b, rb) = models
    assert_same_model(a, b)
    assert ra == rb


@pytest.mark.parametrize("Est, X, y", [(MLPClassifier, X_CLF, Y_CLF),
                                       (MLPRegressor, X_REG, Y_REG)])
@pytest.mark.parametrize("solver, early_stopping",
                         [("adam", False), ("sgd", False), ("adam", True), ("lbfgs", False)])
def test_one_task_per_epoch(skcb, Est, X, y, solver, early_stopping):
    rec = Recorder()
    est = Est(hidden_layer_sizes=(5,), max_iter=30, solver=solver,
              early_stopping=early_stopping, n_iter_no_change=3, tol=2e-2,
              random_state=0)
    quiet_fit(est.set_callbacks(rec), X, y)
    n = est.n_iter_
    assert n >= 1
    if early_stopping:
        assert n < 30  # stopped by early stopping, and still one task per epoch
    name = "lbfgs-iter" if solver == "lbfgs" else "epoch"
    assert rec.iterations("begin") == [("begin", name, i) for i in range(n)]
    assert rec.iterations("end") == [("end", name, i) for i in range(n)]
    # setup, the fit's own task around its iterations, teardown
    assert rec.events[:2] == [("setup", None, None), ("begin", "fit", 0)]
    assert rec.events[-2:] == [("end", "fit", 0), ("teardown", None, None)]
    for kind, _, task_id in rec.events[2:-2]:
        assert kind in ("begin", "end")
    assert "_callback_fit_ctx" not in est.__dict__


@pytest.mark.parametrize("solver, early_stopping",
                         [("adam", False), ("sgd", False), ("adam", True), ("lbfgs", False)])
@pytest.mark.parametrize("k", [1, 4])
def test_stop_at_epoch_k_equals_max_iter_k(skcb, solver, early_stopping, k):
    """on_fit_task_end returning True at epoch k: n_iter_ == k and the model is the one
    max_iter=k gives (early stopping's best weights restored as at any fit's end), with
    no ConvergenceWarning."""
    params = dict(hidden_layer_sizes=(7,), solver=solver, early_stopping=early_stopping,
                  random_state=0)
    rec = Recorder(stop_at=k)
    est = MLPClassifier(max_iter=50, **params).set_callbacks(rec)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        est.fit(X_CLF, Y_CLF)
    ref = quiet_fit(MLPClassifier(max_iter=k, **params), X_CLF, Y_CLF)
    assert est.n_iter_ == k
    assert len(rec.iterations("end")) == k
    assert_same_model(est, ref)
    assert_array_equal(est.predict_proba(X_CLF), ref.predict_proba(X_CLF))
    if solver != "lbfgs" and not early_stopping:
        # optimizer state too: one more epoch on each stays identical
        assert_same_model(est.partial_fit(X_CLF, Y_CLF), ref.partial_fit(X_CLF, Y_CLF))


@pytest.mark.parametrize("solver, early_stopping",
                         [("adam", False), ("adam", True), ("lbfgs", False)])
def test_fitted_estimator_is_the_model_at_that_epoch(skcb, solver, early_stopping):
    """The fitted_estimator a hook receives is the model as if the fit stopped there,
    and training on does not change it afterwards."""
    params = dict(hidden_layer_sizes=(6,), solver=solver, early_stopping=early_stopping,
                  random_state=0)
    rec = Recorder(keep=True)
    est = quiet_fit(MLPClassifier(max_iter=5, **params).set_callbacks(rec), X_CLF, Y_CLF)
    assert len(rec.fitted) == est.n_iter_ == 5
    for k, fitted in enumerate(rec.fitted, start=1):
        ref = quiet_fit(MLPClassifier(max_iter=k, **params), X_CLF, Y_CLF)
        for x, y in zip(layers(fitted), layers(ref)):
            assert_array_equal(x, y)
        assert_array_equal(fitted.predict_proba(X_CLF), ref.predict_proba(X_CLF))
        assert fitted is not est
    assert_array_equal(rec.fitted[-1].predict(X_CLF), est.predict(X_CLF))


def test_scoring_monitor_records_every_epoch(skcb):
    monitor = skcb.ScoringMonitor(scoring="accuracy")
    params = dict(hidden_layer_sizes=(6,), random_state=0)
    est = quiet_fit(MLPClassifier(max_iter=6, **params).set_callbacks(monitor),
                    X_CLF, Y_CLF)
    rows = monitor.get_logs().data
    epochs = [r for r in rows if r["task_name"] == "epoch"]
    assert [r["task_id_path"] for r in epochs] == [(0, i) for i in range(est.n_iter_)]
    for k, row in enumerate(epochs, start=1):
        ref = quiet_fit(MLPClassifier(max_iter=k, **params), X_CLF, Y_CLF)
        assert row["accuracy"] == accuracy_score(Y_CLF, ref.predict(X_CLF))
    (fit_row,) = [r for r in rows if r["task_name"] == "fit"]
    assert fit_row["accuracy"] == est.score(X_CLF, Y_CLF)


def test_scoring_monitor_lbfgs_and_sample_weight(skcb):
    monitor = skcb.ScoringMonitor(scoring="r2")
    sw = np.linspace(0.5, 2.0, X_REG.shape[0])
    est = quiet_fit(MLPRegressor(hidden_layer_sizes=(4,), solver="lbfgs", max_iter=8,
                                 random_state=0).set_callbacks(monitor),
                    X_REG, Y_REG, sample_weight=sw)
    rows = [r for r in monitor.get_logs().data if r["task_name"] == "lbfgs-iter"]
    assert len(rows) == est.n_iter_ == 8
    # the last iteration's model is the fitted model, scored with the sample weights
    assert rows[-1]["r2"] == est.score(X_REG, Y_REG, sample_weight=sw)


@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_progress_bar(skcb, capsys, solver):
    pytest.importorskip("rich")
    est = MLPClassifier(hidden_layer_sizes=(5,), max_iter=6, solver=solver,
                        random_state=0)
    quiet_fit(est.set_callbacks(skcb.ProgressBar()), X_CLF, Y_CLF)
    out = capsys.readouterr().out
    assert re.search(r"MLPClassifier - fit", out)
    assert re.search(r"100%", out)
    if solver == "adam":
        est.partial_fit(X_CLF, Y_CLF)
        out = capsys.readouterr().out
        assert re.search(r"MLPClassifier - fit", out) and re.search(r"100%", out)


def test_partial_fit_is_one_task_per_call(skcb):
    rec = Recorder()
    est = MLPClassifier(hidden_layer_sizes=(5,), random_state=0).set_callbacks(rec)
    ref = MLPClassifier(hidden_layer_sizes=(5,), random_state=0)
    classes = np.unique(Y_CLF)
    for _ in range(3):
        est.partial_fit(X_CLF, Y_CLF, classes=classes)
        ref.partial_fit(X_CLF, Y_CLF, classes=classes)
    assert rec.events == 3 * [("setup", None, None), ("begin", "fit", 0),
                              ("end", "fit", 0), ("teardown", None, None)]
    assert_same_model(est, ref)


def test_lbfgs_iteration_cut_short_by_max_fun(skcb):
    """max_fun can end L-BFGS inside an iteration: that task still ends (without
    data), so every begin has its end."""
    rec = Recorder()
    est = quiet_fit(MLPRegressor(hidden_layer_sizes=(4,), solver="lbfgs", max_iter=200,
                                 max_fun=7, random_state=0).set_callbacks(rec),
                    X_REG, Y_REG)
    begins, ends = rec.iterations("begin"), rec.iterations("end")
    assert len(begins) == len(ends)
    assert est.n_iter_ <= len(ends) <= est.n_iter_ + 1


def test_callback_error_fails_the_fit_and_leaves_the_model(skcb):
    class Failing(Recorder):
        def on_fit_task_end(self, estimator, context, **kwargs):
            super().on_fit_task_end(estimator, context, **kwargs)
            if context.task_id == 2:
                raise RuntimeError("callback failed")

    est = quiet_fit(MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, random_state=0),
                    X_CLF, Y_CLF)
    before = [a.copy() for a in layers(est)]
    rec = Failing()
    est.set_callbacks(rec)
    est.set_params(warm_start=True)
    with pytest.raises(RuntimeError, match="callback failed"):
        est.fit(X_CLF, Y_CLF)
    assert rec.events[-1] == ("teardown", None, None)
    for a, b in zip(before, layers(est)):
        assert_array_equal(a, b)
    assert "_callback_fit_ctx" not in est.__dict__


def test_pipeline_with_callbacks(skcb):
    pytest.importorskip("rich")
    monitor = skcb.ScoringMonitor(scoring="accuracy")
    mlp = MLPClassifier(hidden_layer_sizes=(5,), max_iter=4, random_state=0)
    pipe = make_pipeline(StandardScaler(), mlp.set_callbacks(monitor))
    pipe.set_callbacks(skcb.ProgressBar())
    quiet_fit(pipe, X_CLF, Y_CLF)
    log = monitor.get_logs()
    assert log.estimator_name == "Pipeline"  # the MLP's tasks joined the pipeline's tree
    epochs = [r for r in log.data if r["task_name"] == "epoch"]
    assert [r["task_id_path"] for r in epochs] == [(0, 1, i) for i in range(4)]
    assert epochs[-1]["accuracy"] == pipe.score(X_CLF, Y_CLF)
    ref = quiet_fit(make_pipeline(StandardScaler(), clone(mlp).set_callbacks()),
                    X_CLF, Y_CLF)
    assert_same_model(pipe[-1], ref[-1])


def test_pipeline_without_callbacks_same_model(skcb):
    """In a pipeline the model joins its task tree even without callbacks (as
    scikit-learn's estimators do), with no subtask per epoch, and the same model."""
    pipe = quiet_fit(make_pipeline(MLPRegressor(hidden_layer_sizes=(4,), max_iter=5,
                                                random_state=0)), X_REG, Y_REG)
    ref = quiet_fit(MLPRegressor(hidden_layer_sizes=(4,), max_iter=5, random_state=0),
                    X_REG, Y_REG)
    assert_same_model(pipe[-1], ref)


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_grid_search_with_callbacks(skcb, n_jobs):
    monitor = skcb.ScoringMonitor(scoring="accuracy")
    mlp = MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, random_state=0)
    search = GridSearchCV(mlp.set_callbacks(monitor), {"alpha": [1e-4, 1e-1]}, cv=2,
                          n_jobs=n_jobs)
    quiet_fit(search, X_CLF, Y_CLF)
    log = monitor.get_logs()
    assert log.estimator_name == "GridSearchCV"
    # 4 candidate-split fits and the refit, each with its 3 epochs
    assert sum(r["task_name"] == "fit" for r in log.data) == 5
    assert sum(r["task_name"] == "epoch" for r in log.data) == 15
    assert search.best_estimator_._skl_callbacks == [monitor]


def test_grid_search_callback_stops_every_fit(skcb):
    search = GridSearchCV(
        MLPClassifier(hidden_layer_sizes=(5,), max_iter=40, random_state=0)
        .set_callbacks(Recorder(stop_at=2)),
        {"alpha": [1e-4, 1e-1]}, cv=2)
    search.fit(X_CLF, Y_CLF)
    assert search.best_estimator_.n_iter_ == 2


def test_grid_search_progress_bar(skcb, capsys):
    pytest.importorskip("rich")
    search = GridSearchCV(MLPClassifier(hidden_layer_sizes=(5,), max_iter=3,
                                        random_state=0), {"alpha": [1e-4, 1e-1]}, cv=2)
    quiet_fit(search.set_callbacks(skcb.ProgressBar(max_propagation_depth=None)),
              X_CLF, Y_CLF)
    out = capsys.readouterr().out
    assert re.search(r"MLPClassifier - fit", out)
    assert not re.search(r"\b[0-9]{1,2}%", out)


def test_pickle_with_callbacks(skcb):
    monitor = skcb.ScoringMonitor(scoring="r2")
    est = MLPRegressor(hidden_layer_sizes=(4,), max_iter=4, random_state=0)
    est.set_callbacks(monitor, Inert())
    restored = pickle.loads(pickle.dumps(est))
    assert len(restored._skl_callbacks) == 2
    quiet_fit(est, X_REG, Y_REG)
    restored = pickle.loads(pickle.dumps(est))
    assert [type(c) for c in restored._skl_callbacks] == [type(monitor), Inert]
    assert_same_model(restored, est)
    # the unpickled model fits again with its callbacks, to the same model
    quiet_fit(restored, X_REG, Y_REG)
    quiet_fit(est, X_REG, Y_REG)
    assert_same_model(restored, est)
    assert len(restored._skl_callbacks[0].get_logs().data) == 5


def test_clone_keeps_callbacks_and_set_callbacks_drops_them(skcb):
    """As scikit-learn's estimators: clone passes the callbacks on by reference (one
    callback follows every clone); set_callbacks() with none removes them; a
    non-callback is refused."""
    rec = Recorder()
    est = MLPClassifier(max_iter=3).set_callbacks(rec)
    cloned = clone(est)
    assert cloned._skl_callbacks is est._skl_callbacks
    assert cloned.get_params() == est.get_params()
    assert "_skl_callbacks" not in clone(MLPClassifier()).__dict__
    assert est.set_callbacks() is est
    assert "_skl_callbacks" not in est.__dict__
    with pytest.raises(TypeError, match="FitCallback"):
        est.set_callbacks(object())
    with pytest.raises(TypeError, match="FitCallback"):
        est.set_callbacks(Recorder)


def test_interrupt_from_a_callback_keeps_the_completed_epochs(skcb):
    """A KeyboardInterrupt during a fit (here from a callback, at the end of epoch 3)
    ends fit as an interrupt always does, and every task begun is ended."""

    class Interrupting(Recorder):
        def on_fit_task_end(self, estimator, context, **kwargs):
            super().on_fit_task_end(estimator, context, **kwargs)
            if context.task_name == "epoch" and context.task_id == 2:
                raise KeyboardInterrupt

    rec = Interrupting()
    est = MLPClassifier(hidden_layer_sizes=(5,), max_iter=10, random_state=0)
    with pytest.warns(UserWarning, match="Training interrupted by user"):
        est.set_callbacks(rec).fit(X_CLF, Y_CLF)
    assert est.n_iter_ == 3
    assert len(rec.iterations("begin")) == len(rec.iterations("end")) == 3
    assert rec.events[-2:] == [("end", "fit", 0), ("teardown", None, None)]
