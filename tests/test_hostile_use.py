"""What a hostile but realistic user does, and what fastprop guarantees then.

1. **fork**: a fit or predict in a child made by ``os.fork()`` (or a ``multiprocessing``
   pool with any start method), after fastprop ran a team in the parent, or while it
   runs one, finishes and gives the parent's model.
2. **interrupts** of a ``partial_fit`` whose X holds NaN, in both orders (the epoch finds
   the NaN first / the interrupt comes first): the model keeps all its state and the
   call raises scikit-learn's NaN error. An interrupt on clean X undoes the unfinished
   epoch completely: weights, optimizer state, step count and random state.
3. **float32 overflow at predict**: a float32 model given float64 X beyond float32's
   range computes in float64 instead of returning NaN.
4. **a failed call loses nothing**: a ``partial_fit`` / ``fit`` that raises (float32
   overflow in X, y or sample_weight, weights that become non-finite) leaves the model
   bitwise as it was, unfitted included.
5. **L-BFGS determinism**: bitwise the same model for any thread count and beside other
   L-BFGS fits in other threads.

Cases that could hang or that send signals run in subprocesses with a timeout.
"""

import functools
import json
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_array_equal
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from fastprop import MLPClassifier, MLPRegressor, reference

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def run_script(tmp_path, body, *, env=None, timeout=240):
    """Run ``body`` as a script file in a fresh interpreter (a file, so that spawned
    multiprocessing children can import it); return its last stdout line as JSON."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(body))
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1")
    full_env.update(env or {})
    try:
        proc = subprocess.run([sys.executable, str(script)], capture_output=True,
                              text=True, timeout=timeout, env=full_env, cwd=tmp_path)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the script hung ({timeout} s):\n{exc.stdout}\n{exc.stderr}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def model_state(est):
    """Everything a training call may change, as comparable values."""
    state = {name: getattr(est, name) for name in (
        "n_iter_", "t_", "loss_", "best_loss_", "_no_improvement_count", "n_outputs_",
        "n_layers_", "out_activation_") if hasattr(est, name)}
    state["loss_curve_"] = list(getattr(est, "loss_curve_", []) or [])
    state["layers"] = [a.copy() for a in list(est.coefs_) + list(est.intercepts_)]
    opt = getattr(est, "_optimizer", None)
    if opt is not None:
        state["optimizer"] = [opt.state_1.copy(), opt.state_2.copy(), opt.counter.copy(),
                              opt.hyper.copy()]
    rs = est.random_state
    if isinstance(rs, np.random.RandomState):
        state["rng"] = rs.get_state()[1].copy()
    return state


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if key in ("layers", "optimizer"):
            assert len(a[key]) == len(b[key])
            for x, y in zip(a[key], b[key]):
                assert x.dtype == y.dtype
                assert_array_equal(x, y)
        elif key == "rng":
            assert_array_equal(a[key], b[key])
        else:
            assert a[key] == b[key], key


# =======================================================================================
# 1. fork
# =======================================================================================

FORK_JOBS = r'''
import hashlib, json, os, sys, threading, time, warnings
import multiprocessing as mp
import numpy as np
import scipy.sparse as sp
warnings.simplefilter("ignore")
from fastprop import MLPClassifier, MLPRegressor
from fastprop.core import _kernels

def data(kind):
    rng = np.random.RandomState(0)
    X = rng.randn(1000, 10)
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    if kind == "sparse":
        X = sp.csr_matrix(np.where(np.abs(X) > 0.5, X, 0.0))
    elif kind == "float32":
        X = X.astype(np.float32)
    return X, y

# one job per kind of pass: split minibatches (the default 200 rows), unit-split ones
# (64 rows on a wide network), whole ones (32 rows), L-BFGS's split blocks, sparse X
JOBS = {
    "rows": (MLPClassifier, dict(max_iter=2), "dense"),
    "units": (MLPClassifier, dict(hidden_layer_sizes=(256, 128), batch_size=64,
                                  max_iter=1), "dense"),
    "whole": (MLPClassifier, dict(batch_size=32, max_iter=2), "dense"),
    "lbfgs": (MLPRegressor, dict(solver="lbfgs", max_iter=5), "dense"),
    "sparse": (MLPClassifier, dict(max_iter=2), "sparse"),
    "float32": (MLPClassifier, dict(max_iter=2), "float32"),
}

def fit_job(name):
    Est, params, kind = JOBS[name]
    X, y = data(kind)
    m = Est(random_state=0, **params).fit(X, y)
    h = hashlib.sha1()
    for a in m.coefs_ + m.intercepts_:
        h.update(a.tobytes())
    h.update(np.asarray(m.predict(X)).tobytes())
    return h.hexdigest()

def all_jobs():
    return {name: fit_job(name) for name in JOBS}

def in_child(work, timeout=120):
    """Run work() in a forked child; return what it returns (JSON), or 'HANG'."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            out = json.dumps(work()).encode()
        except BaseException as exc:
            out = json.dumps({"error": repr(exc)}).encode()
        os.write(w, out)
        os._exit(0)
    os.close(w)
    deadline = time.time() + timeout
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        return "HANG"
    chunks = []
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(r)
    return json.loads(b"".join(chunks))

def child_work():
    out = {"main": all_jobs(), "team_usable_main": _kernels.team_usable()}
    # a thread the child starts has no OpenMP pool yet: it may run a team again
    got = {}
    t = threading.Thread(target=lambda: got.update(
        team_usable=_kernels.team_usable(), jobs=all_jobs()))
    t.start()
    t.join()
    out["thread"] = got
    return out
'''


def _check_child(result, expected):
    assert result != "HANG", "the forked child hung"
    assert "error" not in result, result
    assert result["main"] == expected
    assert result["thread"]["jobs"] == expected
    assert result["thread"]["team_usable"] is True


@pytest.mark.parametrize("threads", ["2", "8"])
def test_fit_and_predict_in_a_forked_child_after_the_parent_ran_a_team(tmp_path, threads):
    """The parent's main thread runs every kind of team pass, then forks: the child's
    copy of that thread runs its passes alone (its OpenMP pool stayed in the parent),
    a thread the child starts runs teams again, and both get the parent's models."""
    out = run_script(tmp_path, FORK_JOBS + r'''
if __name__ == "__main__":
    expected = all_jobs()
    assert _kernels.openmp_max_threads() >= 2
    print(json.dumps({"expected": expected, "child": in_child(child_work),
                      "team_usable_parent": _kernels.team_usable()}))
''', env={"OMP_NUM_THREADS": threads})
    assert out["team_usable_parent"] is True
    _check_child(out["child"], out["expected"])
    assert out["child"]["team_usable_main"] is False


def test_fork_while_a_team_runs_in_another_thread(tmp_path):
    """A fork from the main thread while a fit's team runs in a background thread: the
    child (whose main thread never ran a team) fits on teams of its own and gets the
    same models as the parent, and the parent's fit is not disturbed."""
    out = run_script(tmp_path, FORK_JOBS + r'''
if __name__ == "__main__":
    rng = np.random.RandomState(1)
    Xb = rng.randn(20000, 50)
    yb = (Xb[:, 0] > 0).astype(int)
    kw = dict(hidden_layer_sizes=(256, 128), batch_size=256, random_state=0)
    epochs_done = []
    stop = threading.Event()

    def background():
        # epoch after epoch, each a team pass of ~100 minibatches: at any moment the
        # team is almost surely inside one
        m = MLPClassifier(**kw)
        while not stop.is_set():
            m.partial_fit(Xb, yb, classes=[0, 1])
            epochs_done.append(float(m.coefs_[0].sum()))

    t = threading.Thread(target=background)
    t.start()
    while len(epochs_done) < 2:
        time.sleep(0.01)
    time.sleep(0.013)
    still_running = t.is_alive()
    child = in_child(child_work)
    stop.set()
    t.join()
    again = MLPClassifier(**kw)
    for _ in epochs_done:
        again.partial_fit(Xb, yb, classes=[0, 1])
    print(json.dumps({"child": child, "expected": all_jobs(),
                      "still_running": still_running,
                      "background_same": float(again.coefs_[0].sum()) == epochs_done[-1]}))
''', env={"OMP_NUM_THREADS": "2"})
    assert out["still_running"]
    _check_child(out["child"], out["expected"])
    assert out["child"]["team_usable_main"] is True
    assert out["background_same"]


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_multiprocessing_pool_after_a_team_in_the_parent(tmp_path, method):
    """``multiprocessing.Pool`` with each start method, after the parent ran teams:
    every worker's fits equal the parent's."""
    out = run_script(tmp_path, FORK_JOBS + r'''
if __name__ == "__main__":
    method = sys.argv[1] if len(sys.argv) > 1 else os.environ["FP_METHOD"]
    expected = all_jobs()
    ctx = mp.get_context(method)
    with ctx.Pool(2) as pool:
        got = dict(zip(JOBS, pool.map(fit_job, list(JOBS), chunksize=1)))
    print(json.dumps({"expected": expected, "got": got}))
''', env={"OMP_NUM_THREADS": "2", "FP_METHOD": method})
    assert out["got"] == out["expected"]


# =======================================================================================
# 2. interrupts
# =======================================================================================

INTERRUPT = r'''
import hashlib, json, os, signal, threading, time, warnings
import numpy as np
from fastprop import MLPClassifier

def state(m):
    """Digests of everything a call may change."""
    o = m._optimizer
    arrays = m.coefs_ + m.intercepts_ + [o.state_1, o.state_2, o.counter, o.hyper]
    return [hashlib.sha1(a.tobytes()).hexdigest() for a in arrays] + [
        m.n_iter_, m.t_, m.loss_, list(m.loss_curve_)]

rng = np.random.RandomState(0)
X = rng.randn(60000, 100)
y = rng.randint(0, 3, 60000)
kw = dict(hidden_layer_sizes=(512, 256), batch_size=64, random_state=0)
m = MLPClassifier(**kw).partial_fit(X[:500], y[:500], classes=[0, 1, 2])
twin = MLPClassifier(**kw).partial_fit(X[:500], y[:500], classes=[0, 1, 2])
before = state(m)
# the call's shuffle: a fitted model's partial_fit draws it first from a fresh
# RandomState(random_state)
order = np.arange(60000)
np.random.RandomState(0).shuffle(order)
case = os.environ["FP_CASE"]
bad = X.copy()
if case == "nan-first":
    bad[order[:64 * 8:7], 3] = np.nan      # in the minibatches before the first check
elif case == "interrupt-first":
    bad[order[-1], 3] = np.nan             # the very last row the epoch visits
elif case == "inf-last-clean-first":
    bad[order[-1], 3] = np.inf
result = {"case": case}
timer = threading.Timer(float(os.environ["FP_DELAY"]),
                        lambda: os.kill(os.getpid(), signal.SIGINT))
tic = time.time()
timer.start()
try:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m.partial_fit(bad if case != "clean" else X, y)
    result["outcome"] = "returned"
    result["warnings"] = [str(w.message) for w in caught]
except ValueError as exc:
    result["outcome"] = "ValueError"
    result["message"] = str(exc).splitlines()[0]
result["call_s"] = time.time() - tic
try:
    time.sleep(1.0)
    result["late_interrupt"] = False
except KeyboardInterrupt:
    result["late_interrupt"] = True
result["unchanged"] = state(m) == before
# the model trains on as if the failed or interrupted call had not been made
m.partial_fit(X[:2000], y[:2000])
twin.partial_fit(X[:2000], y[:2000])
result["same_as_twin"] = state(m) == state(twin)
print(json.dumps(result))
'''


@pytest.mark.slow
@pytest.mark.parametrize("case,delay", [
    ("nan-first", "0.3"), ("nan-first", "0.1"), ("interrupt-first", "0.3"),
    ("interrupt-first", "0.6"), ("inf-last-clean-first", "0.3")])
def test_interrupt_of_partial_fit_on_nonfinite_x_keeps_the_model(tmp_path, case, delay):
    """SIGINT during a ``partial_fit`` whose X holds NaN or infinity, found by the
    epoch before the interrupt or after it: scikit-learn's error, and the model
    (weights, both optimizer states, step count, n_iter_, t_, loss curve) as it was."""
    out = run_script(tmp_path, INTERRUPT, env={"FP_CASE": case, "FP_DELAY": delay,
                                               "OMP_NUM_THREADS": "2"})
    assert not out["late_interrupt"], f"the interrupt came after the call: {out}"
    assert out["outcome"] == "ValueError", out
    assert out["message"] == ("Input X contains NaN." if "nan" in case or case ==
                              "interrupt-first" else "Input X contains infinity or a "
                              "value too large for dtype('float64').")
    assert out["unchanged"] and out["same_as_twin"], out


@pytest.mark.slow
@pytest.mark.parametrize("delay,threads", [("0.1", "2"), ("0.3", "2"), ("0.3", "1"),
                                           ("0.6", "4")])
def test_interrupt_of_partial_fit_on_clean_x_undoes_the_epoch(tmp_path, delay, threads):
    """SIGINT during a clean ``partial_fit``: scikit-learn's warning, and the model as
    it was before the call (its only epoch did not complete), optimizer state included,
    so later calls train exactly as its twin's."""
    out = run_script(tmp_path, INTERRUPT, env={"FP_CASE": "clean", "FP_DELAY": delay,
                                               "OMP_NUM_THREADS": threads})
    assert not out["late_interrupt"], out
    assert out["outcome"] == "returned", out
    assert "Training interrupted by user." in out["warnings"], out
    assert out["unchanged"] and out["same_as_twin"], out


# =======================================================================================
# 3. float32 overflow at predict
# =======================================================================================

@functools.lru_cache(maxsize=None)
def _f32_models():
    rng = np.random.RandomState(0)
    X = rng.randn(300, 4).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    Y2 = np.stack([X[:, 0] > 0, X[:, 1] > 0], axis=1).astype(int)
    yr = X[:, 0].astype(np.float64)
    return {
        "binary": MLPClassifier((8,), max_iter=200, random_state=0).fit(X, y),
        "multiclass": MLPClassifier((8,), max_iter=200, random_state=0).fit(
            X, (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)),
        "multilabel": MLPClassifier((8,), max_iter=200, random_state=0).fit(X, Y2),
        "regressor": MLPRegressor(hidden_layer_sizes=(8,), max_iter=200,
                                  random_state=0).fit(X, yr),
        "poisson": MLPRegressor(loss="poisson", hidden_layer_sizes=(8,), max_iter=200,
                                random_state=0, activation="tanh").fit(X, np.abs(yr)),
    }


def _f64_output(est, X):
    """The network's output computed in float64 by the reference."""
    coefs = [np.asarray(W, dtype=np.float64) for W in est.coefs_]
    intercepts = [np.asarray(b, dtype=np.float64) for b in est.intercepts_]
    loss = {"identity": "squared_error", "exp": "poisson", "softmax": "log_loss",
            "logistic": "binary_log_loss"}[est.out_activation_]
    return reference.forward(coefs, intercepts, np.asarray(X, dtype=np.float64),
                             activation=est.activation, loss=loss)


@pytest.mark.parametrize("name", ["binary", "multiclass", "multilabel", "regressor",
                                  "poisson"])
@pytest.mark.parametrize("value", [1e39, -1e39, 1e300, 1e38])
@pytest.mark.parametrize("sparse", [False, True])
def test_float32_model_predicts_float64_x_beyond_float32_range(name, value, sparse):
    """A float32 model given float64 X beyond float32's range (or whose float32
    products overflow): never NaN, never a class made up from NaN; the output is what
    float64 arithmetic gives, as scikit-learn computes float64 X."""
    est = _f32_models()[name]
    X = np.array([[value, 0.0, 0.0, 0.0], [0.1, -0.2, 0.3, 0.0], [0.0, value, 0.0, 1.0]])
    Xin = sp.csr_matrix(X) if sparse else X
    want = _f64_output(est, X)
    if isinstance(est, MLPClassifier):
        proba = est.predict_proba(Xin)
        assert np.isfinite(proba).all()
        full = want if want.shape[1] > 1 else np.hstack([1 - want, want])
        np.testing.assert_allclose(proba, full, rtol=1e-5, atol=1e-6)
        pred = est.predict(Xin)
        if name == "multiclass":
            assert_array_equal(pred, est.classes_[want.argmax(axis=1)])
        elif name == "binary":
            assert_array_equal(pred, est.classes_[(want[:, 0] > 0.5).astype(int)])
        else:
            assert_array_equal(pred, (want > 0.5).astype(int))
    else:
        got = est.predict(Xin)
        assert not np.isnan(got).any()
        np.testing.assert_allclose(got, want.ravel(), rtol=1e-5)
    # ordinary rows keep the float32 path and dtype
    assert est.predict(X[1:2].astype(np.float32)).dtype == (
        np.float32 if isinstance(est, MLPRegressor) else est.classes_.dtype)


# =======================================================================================
# 4. a failed call loses nothing
# =======================================================================================

def _reg_data(n=120, seed=3):
    rng = np.random.RandomState(seed)
    X = rng.randn(n, 5)
    return X, X[:, 0] - 2 * X[:, 1]


@pytest.mark.parametrize("what", ["X", "y", "sample_weight", "sparse-X"])
def test_partial_fit_with_values_beyond_float32_fails_clearly_and_loses_nothing(what):
    X, y = _reg_data()
    X32 = X.astype(np.float32)
    est = MLPRegressor(hidden_layer_sizes=(6,), batch_size=16, random_state=0)
    twin = MLPRegressor(hidden_layer_sizes=(6,), batch_size=16, random_state=0)
    for m in (est, twin):
        m.partial_fit(X32, y)
        m.partial_fit(X32, y)
    before = model_state(est)
    Xb, yb, sw = X.copy(), y.copy(), np.ones(len(y))
    if what in ("X", "sparse-X"):
        Xb[7, 2] = 1e300
    elif what == "y":
        yb[3] = -1e300
    else:
        sw[5] = 1e300
    if what == "sparse-X":
        Xb = sp.csr_matrix(Xb)
    with pytest.raises(ValueError, match=f"{what.replace('sparse-', '')} has values "
                                         "beyond float32's range"):
        est.partial_fit(Xb, yb, sample_weight=sw)
    assert_same_state(model_state(est), before)
    est.partial_fit(X32, y)
    twin.partial_fit(X32, y)
    assert_same_state(model_state(est), model_state(twin))


@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_partial_fit_that_diverges_leaves_the_model_as_it_was(Est, solver):
    """X scaled to 3e38 in float32 is in range, but its products are not: the call raises
    scikit-learn's non-finite-weights error, and the model (optimizer state included)
    is the one from before the call, so the next clean call works and matches a twin."""
    X, y = _reg_data(200)
    if Est is MLPClassifier:
        y = (y > 0).astype(int)
    X32 = X.astype(np.float32)
    kw = dict(hidden_layer_sizes=(6,), batch_size=16, solver=solver,
              random_state=np.random.RandomState(4))
    est, twin = Est(**kw), Est(**{**kw, "random_state": np.random.RandomState(4)})
    first = dict(classes=[0, 1]) if Est is MLPClassifier else {}
    for m in (est, twin):
        m.partial_fit(X32, y, **first)
    before = model_state(est)
    with pytest.raises(ValueError, match="non-finite parameter weights"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            est.partial_fit(X32 / np.abs(X32).max() * np.float32(3e38), y)
    assert_same_state(model_state(est), before)
    est.partial_fit(X32, y)
    twin.partial_fit(X32, y)
    assert_same_state(model_state(est), model_state(twin))


def test_a_failed_first_call_leaves_the_estimator_unfitted():
    """A first ``partial_fit`` / ``fit`` that fails leaves no half-made model behind:
    the estimator is still unfitted, and the next call starts from scratch."""
    X, y = _reg_data()
    X32 = X.astype(np.float32)
    huge_y = y.copy()
    huge_y[0] = 1e300
    for call in ("partial_fit", "fit"):
        est = MLPRegressor(hidden_layer_sizes=(6,), max_iter=5, random_state=0)
        with pytest.raises(ValueError, match="y has values beyond float32's range"):
            getattr(est, call)(X32, huge_y)
        with pytest.raises(NotFittedError):
            check_is_fitted(est)
        assert not hasattr(est, "coefs_") and not hasattr(est, "_optimizer")
        a = getattr(est, call)(X32, y)
        b = getattr(MLPRegressor(hidden_layer_sizes=(6,), max_iter=5, random_state=0),
                    call)(X32, y)
        assert_same_state(model_state(a), model_state(b))


def test_a_failed_warm_start_fit_keeps_the_previous_model():
    X, y = _reg_data()
    X32 = X.astype(np.float32)
    est = MLPRegressor(hidden_layer_sizes=(6,), max_iter=5, warm_start=True,
                       random_state=0).fit(X32, y)
    before = model_state(est)
    with pytest.raises(ValueError, match="non-finite parameter weights"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            est.fit(X32 * np.float32(1e30), y)
    assert_same_state(model_state(est), before)


# =======================================================================================
# 5. L-BFGS determinism
# =======================================================================================

LBFGS = r'''
import hashlib, json, os, threading, warnings
import numpy as np
import scipy.sparse as sp
warnings.simplefilter("ignore")
from fastprop import MLPRegressor

rng = np.random.RandomState(0)
X = rng.randn(3000, 50)
y = X[:, :5].sum(axis=1) + 0.1 * rng.randn(3000)
kind = os.environ["FP_KIND"]
if kind == "sparse":
    X = sp.csr_matrix(np.where(np.abs(X) > 0.7, X, 0.0))
elif kind == "float32":
    X = X.astype(np.float32)

def fit():
    m = MLPRegressor(hidden_layer_sizes=(256, 128), solver="lbfgs", max_iter=25,
                     random_state=0).fit(X, y)
    h = hashlib.sha1()
    for a in m.coefs_ + m.intercepts_:
        h.update(a.tobytes())
    return h.hexdigest()

alone = fit()
side_by_side = []
for _ in range(2):
    got = [None] * 3
    threads = [threading.Thread(target=lambda i=i: got.__setitem__(i, fit()))
               for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    side_by_side += got
print(json.dumps({"alone": alone, "side_by_side": side_by_side}))
'''


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dense", "sparse", "float32"])
def test_lbfgs_is_bitwise_the_same_for_every_thread_count_and_side_by_side(tmp_path,
                                                                           kind):
    """OMP_NUM_THREADS=1, 2 and 4 (which also sets OpenBLAS's threads), and three fits
    at once in three threads: one model, bit for bit. SciPy's step between passes runs
    on BLAS held at one thread for the whole fit."""
    results = [run_script(tmp_path, LBFGS, env={"OMP_NUM_THREADS": n, "FP_KIND": kind})
               for n in ("1", "2", "4")]
    hashes = {r["alone"] for r in results}
    for r in results:
        hashes.update(r["side_by_side"])
    assert len(hashes) == 1, results
