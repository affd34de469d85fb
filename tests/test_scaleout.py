"""Scale-out: threads, thread pools, a Dask cluster, and data larger than memory.

fastprop scales through the engines its users already run:

- **threads**: the compiled kernels run without the GIL, so fits and predictions in
  several Python threads (joblib's ``threading`` backend, a web server, a Dask worker's
  thread pool) run in parallel;
- **thread pools**: fastprop's OpenMP runtime and the BLAS it calls (scipy's OpenBLAS)
  are visible to ``threadpoolctl`` and obey ``OMP_NUM_THREADS`` /
  ``threadpool_limits``, so joblib's process workers do not oversubscribe the cores;
- **Dask**: estimators pickle to worker processes, so ``GridSearchCV`` runs on a
  ``dask.distributed`` cluster through ``joblib.parallel_backend("dask")``;
- **larger than memory**: ``partial_fit`` over the blocks of a dask array (dask-ml's
  ``Incremental``) or of a memory-mapped array trains with memory bounded by a block.

Speed (two fits in two threads vs one) is measured by ``benchmarks/bench_threads.py``,
not asserted here. The tests that need ``dask``, ``distributed`` or ``dask_ml`` (the
``fastprop[dask]`` extra) import them outright: the ``test`` extra installs them, so a
missing engine fails the run instead of skipping its tests.

Measuring "the GIL is released": a Python thread that waits for the GIL is asleep; it
is neither running on a CPU nor waiting in the scheduler's run queue. On Linux,
``/proc/thread-self/schedstat`` gives a thread's CPU time and its run-queue wait, so
``wall - cpu - run-queue wait`` is the time the thread was *blocked* (on the GIL, here).
That separates "held up by the GIL" from "the machine is busy with other processes", so
the assertions hold on a loaded 2-core machine. Elsewhere the run-queue wait is taken as 0.
"""

import importlib
import json
import math
import os
import subprocess
import sys
import textwrap
import threading
import time

import joblib
import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import ThreadpoolController, threadpool_info, threadpool_limits

from fastprop import MLPClassifier, MLPRegressor, core
from fastprop._threadstats import thread_times

from .helpers import run_in_threads
from fastprop.core import _kernels

# Most fits below stop by max_iter on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

ON_LINUX = sys.platform.startswith("linux")


# -- helpers ----------------------------------------------------------------------------

def _with_busy_main_thread(fn, worker_limit=None):
    """Run ``fn()`` in a background thread while this (main) thread spins a pure-Python
    loop, i.e. wants the GIL all the time. Returns timings of both threads:

    ``wall``/``cpu``/``runq``/``blocked`` of the background call (blocked = wall - cpu -
    runq: asleep, i.e. waiting for the GIL), and ``main_*`` of the spinning thread.

    ``worker_limit`` applies ``threadpool_limits`` in the background thread itself
    (OpenMP's thread count is per thread), outside the timed call: with 1, fastprop's
    passes there run on that one thread rather than on an OpenMP team, whose barrier
    waits beside the spinning thread (three threads on two cores) would count as
    asleep too."""
    done = threading.Event()
    out = {}

    def worker():
        limit = None if worker_limit is None else threadpool_limits(worker_limit)
        c0, q0 = thread_times()
        t0 = time.perf_counter()
        try:
            out["result"] = fn()
        except BaseException as exc:  # re-raised in the main thread
            out["error"] = exc
        finally:
            out["wall"] = time.perf_counter() - t0
            c1, q1 = thread_times()
            out["cpu"], out["runq"] = c1 - c0, q1 - q0
            if limit is not None:
                limit.restore_original_limits()
            done.set()

    thread = threading.Thread(target=worker)
    c0, q0 = thread_times()
    t0 = time.perf_counter()
    thread.start()
    iterations = 0
    while not done.is_set():
        iterations += 1
    out["main_wall"] = time.perf_counter() - t0
    c1, q1 = thread_times()
    thread.join()
    if "error" in out:
        raise out["error"]
    out["main_cpu"], out["main_runq"] = c1 - c0, q1 - q0
    out["main_iterations"] = iterations
    out["blocked"] = out["wall"] - out["cpu"] - out["runq"]
    return out


def _report(r):
    return ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in r.items() if k != "result")


def _calibrate(run_once, seconds, lo=1, hi=60):
    """How many repetitions of ``run_once`` (timed once here) take about ``seconds``."""
    t0 = time.perf_counter()
    run_once()
    dt = max(time.perf_counter() - t0, 1e-4)
    return int(min(hi, max(lo, math.ceil(seconds / dt))))


def _same_model(a, b, exact=True, rtol=1e-6, atol=1e-8):
    assert len(a.coefs_) == len(b.coefs_)
    for x, y in zip(list(a.coefs_) + list(a.intercepts_), list(b.coefs_) + list(b.intercepts_)):
        if exact:
            np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def _run_script(code, env=None, timeout=300):
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------
# 1. The GIL is released during fit and predict
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wide_data():
    X, y = make_classification(n_samples=20000, n_features=100, n_informative=30,
                               n_classes=3, random_state=0)
    return X.astype(np.float32), y


@pytest.mark.slow
def test_main_thread_runs_during_a_background_fit(wide_data):
    """A ~1.5 s fit in a background thread leaves the main thread free to run Python:
    the main thread is (nearly) never asleep waiting for the GIL."""
    X, y = wide_data

    def make(epochs):
        return MLPClassifier(hidden_layer_sizes=(256, 128), max_iter=epochs, tol=0,
                             random_state=0)

    with threadpool_limits(1):  # one core for the fit, one for the main thread
        epochs = _calibrate(lambda: make(1).fit(X, y), 1.5, lo=2, hi=40)
        r = _with_busy_main_thread(lambda: make(epochs).fit(X, y))
    assert r["result"].n_iter_ == epochs
    assert r["cpu"] > 0.3, _report(r)  # the fit did run compiled code for a while
    # A fit holding the GIL would put the main thread to sleep: no CPU, no run-queue wait.
    main_running = r["main_cpu"] + r["main_runq"]
    assert main_running >= 0.8 * r["main_wall"], _report(r)


@pytest.mark.slow
def test_main_thread_runs_during_a_background_predict(wide_data):
    X, y = wide_data
    model = MLPClassifier(hidden_layer_sizes=(512, 512), max_iter=1, random_state=0)
    model.fit(X[:2000], y[:2000])
    rng = np.random.default_rng(0)
    probe = rng.normal(size=(20000, X.shape[1])).astype(np.float32)
    with threadpool_limits(1):
        reps = _calibrate(lambda: model.predict(probe), 1.5, lo=1, hi=20)
        X_big = np.tile(probe, (reps, 1))
        expected = model.predict(X_big[:5000])
        r = _with_busy_main_thread(lambda: model.predict(X_big))
    np.testing.assert_array_equal(r["result"][:5000], expected)
    assert r["cpu"] > 0.3, _report(r)
    assert r["main_cpu"] + r["main_runq"] >= 0.8 * r["main_wall"], _report(r)
    # predict's forward pass never takes the GIL back: the predicting thread is not
    # held up by the busy main thread beyond a few GIL hand-overs around validation
    assert r["blocked"] <= 0.25 * r["cpu"] + 0.05, _report(r)


@pytest.mark.slow
def test_compiled_epoch_does_not_wait_for_the_gil():
    """One compiled training epoch in a background thread is not slowed by a main
    thread that runs Python: it should need the GIL only to enter and leave.

    Exposes: ``_train_epoch_impl`` (fastprop/core/_kernels.pyx) takes the GIL every
    ``SIGNAL_CHECK_EVERY`` = 8 minibatches to call ``PyErr_CheckSignals``. While another
    thread runs Python, each of those takes waits up to ``sys.getswitchinterval()``
    (5 ms), so a background fit of small minibatches spends most of its time asleep
    (measured on 2 cores: 0.45-0.66 s blocked for 0.34-0.45 s of CPU here, 1.27 s for
    0.22 s with a (32,) network). Signal handlers only ever run in the main thread, so
    the check does nothing in any other thread; deciding before ``with nogil`` to check
    only when called from the main thread brings the wait down to 0.02 s (tried on a
    scratch build)."""
    rng = np.random.default_rng(0)
    n, sizes = 200_000, [20, 256, 1]
    X = rng.normal(size=(n, sizes[0])).astype(np.float32)
    Y = (X[:, :1] + X[:, 1:2] > 0).astype(np.float32)
    params = (0.1 * rng.normal(size=core.n_params(sizes))).astype(np.float32)
    trainer = core.Trainer(sizes, "relu", "binary_log_loss", params, "adam")
    with threadpool_limits(1):
        epochs = _calibrate(lambda: trainer.run_epoch(X, Y, batch_size=200), 0.5, lo=2, hi=20)
        r = _with_busy_main_thread(
            lambda: [trainer.run_epoch(X, Y, batch_size=200) for _ in range(epochs)],
            worker_limit=1)
    assert np.isfinite(params).all()
    # asleep at most a few GIL hand-overs per call (entering/leaving the kernel)
    assert r["blocked"] <= 0.25 * r["cpu"] + 0.01 * epochs + 0.02, (
        f"a compiled epoch waited for the GIL {r['blocked']:.2f} s for "
        f"{r['cpu']:.2f} s of CPU ({epochs} epochs, {n // 200} minibatches each); "
        + _report(r))


@pytest.mark.slow
def test_background_fit_is_not_slowed_by_a_busy_main_thread():
    """The same at the estimator level, with small minibatches (batch_size=200, the
    'auto' size): the fit's Python parts (validation, one shuffle per epoch) take the
    GIL a few times, the compiled epochs should not."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200_000, 20)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(int)

    def make(epochs):
        return MLPClassifier(hidden_layer_sizes=(256,), batch_size=200, max_iter=epochs,
                             tol=0, random_state=0)

    with threadpool_limits(1):
        epochs = _calibrate(lambda: make(1).fit(X, y), 1.0, lo=2, hi=20)
        # one thread in the fit too: a team's barrier waits beside the spinning thread
        # would count as asleep (see _with_busy_main_thread)
        r = _with_busy_main_thread(lambda: make(epochs).fit(X, y), worker_limit=1)
    assert r["result"].n_iter_ == epochs
    assert r["blocked"] <= 0.5 * r["cpu"] + 0.1, (
        f"a background fit waited for the GIL {r['blocked']:.2f} s for {r['cpu']:.2f} s "
        f"of CPU; " + _report(r))


# ---------------------------------------------------------------------------------------
# 2. Concurrent fits in threads: same results as sequential fits
# ---------------------------------------------------------------------------------------

CONCURRENT_CASES = {
    "classifier-adam": (MLPClassifier, dict(hidden_layer_sizes=(64, 32), solver="adam",
                                            max_iter=8)),
    "classifier-sgd": (MLPClassifier, dict(hidden_layer_sizes=(64,), solver="sgd",
                                           max_iter=8, learning_rate_init=0.05)),
    "regressor-lbfgs": (MLPRegressor, dict(hidden_layer_sizes=(32,), solver="lbfgs",
                                           max_iter=30)),
}


def _concurrent_data(cls, seed):
    if cls is MLPClassifier:
        X, y = make_classification(n_samples=3000, n_features=30, n_informative=15,
                                   n_classes=3, random_state=seed)
    else:
        X, y = make_regression(n_samples=1500, n_features=20, noise=1.0, random_state=seed)
        y = y / np.std(y)
    return X, y


def _fit_concurrently(jobs, limit_threads):
    """Fit every (estimator, X, y) of ``jobs`` in its own thread, all released at once by
    a barrier. Returns each fit's (start, end) times."""
    def run(i):
        est, X, y = jobs[i]
        t0 = time.perf_counter()
        if limit_threads:
            # OpenMP's thread count is per calling thread: limit it in this thread
            with threadpool_limits(1):
                est.fit(X, y)
        else:
            est.fit(X, y)
        return t0, time.perf_counter()

    return run_in_threads(len(jobs), run)


@pytest.mark.parametrize("case", sorted(CONCURRENT_CASES))
@pytest.mark.parametrize("limited", [True, False], ids=["threadpool_limits(1)", "unlimited"])
def test_fits_in_threads_equal_sequential_fits(case, limited):
    cls, params = CONCURRENT_CASES[case]
    data = [_concurrent_data(cls, seed) for seed in (0, 1)]
    # two different problems and seeds, plus a twin of the first (same data, same seed)
    specs = [(0, 0), (1, 1), (0, 0)]
    # BLAS's thread count is process-wide: held at 1 around both runs when limited
    ctx = threadpool_limits(1) if limited else threadpool_limits(None)
    with ctx:
        sequential = []
        for d, seed in specs:
            X, y = data[d]
            sequential.append(cls(random_state=seed, **params).fit(X, y))
        concurrent = [cls(random_state=seed, **params) for _, seed in specs]
        spans = _fit_concurrently(
            [(est, *data[d]) for est, (d, _) in zip(concurrent, specs)], limited)
    # the fits did overlap in time
    assert max(s for s, _ in spans) < min(e for _, e in spans)
    for seq, conc in zip(sequential, concurrent):
        assert seq.n_iter_ == conc.n_iter_
        _same_model(seq, conc, exact=limited)
    _same_model(concurrent[0], concurrent[2], exact=limited)


class _RecordingMLP(MLPClassifier):
    """MLPClassifier that records which thread fitted it and how many fits overlapped."""

    lock = threading.Lock()
    threads = set()
    running = 0
    max_running = 0

    def fit(self, X, y, sample_weight=None):
        cls = type(self)
        with cls.lock:
            cls.threads.add(threading.get_ident())
            cls.running += 1
            cls.max_running = max(cls.max_running, cls.running)
        try:
            return super().fit(X, y, sample_weight=sample_weight)
        finally:
            with cls.lock:
                cls.running -= 1


def test_gridsearch_threading_backend_equals_sequential():
    X, y = make_classification(n_samples=3000, n_features=30, n_informative=10,
                               n_classes=3, random_state=0)
    grid = {"hidden_layer_sizes": [(32,), (64,)], "alpha": [1e-4, 1e-1]}
    est = _RecordingMLP(max_iter=15, random_state=0)
    with threadpool_limits(1):
        sequential = GridSearchCV(est, grid, cv=3, n_jobs=1).fit(X, y)
        _RecordingMLP.threads.clear()
        _RecordingMLP.max_running = 0
        with joblib.parallel_backend("threading"):
            threaded = GridSearchCV(est, grid, cv=3, n_jobs=2).fit(X, y)
    # two worker threads fitted, and fits ran at the same time
    assert len(_RecordingMLP.threads) >= 2
    assert _RecordingMLP.max_running == 2
    np.testing.assert_array_equal(threaded.cv_results_["mean_test_score"],
                                  sequential.cv_results_["mean_test_score"])
    np.testing.assert_array_equal(threaded.cv_results_["std_test_score"],
                                  sequential.cv_results_["std_test_score"])
    assert threaded.best_params_ == sequential.best_params_
    _same_model(threaded.best_estimator_, sequential.best_estimator_)


# ---------------------------------------------------------------------------------------
# 3. Thread pools: visible to threadpoolctl, obey OMP_NUM_THREADS and threadpool_limits
# ---------------------------------------------------------------------------------------

needs_openmp = pytest.mark.skipif(
    not _kernels.HAS_OPENMP, reason="fastprop was built without OpenMP (e.g. Apple clang)")


@needs_openmp
def test_threadpool_info_lists_an_openmp_runtime():
    apis = {(p["user_api"], p["internal_api"]) for p in threadpool_info()}
    assert ("openmp", "openmp") in apis, threadpool_info()
    assert any(p["user_api"] == "blas" for p in threadpool_info())


@needs_openmp
def test_threadpool_limits_controls_fastprops_openmp():
    before = _kernels.openmp_max_threads()
    with threadpool_limits(1, user_api="openmp"):
        assert _kernels.openmp_max_threads() == 1
    assert _kernels.openmp_max_threads() == before
    with threadpool_limits(1):
        assert _kernels.openmp_max_threads() == 1
        assert all(p["num_threads"] == 1 for p in threadpool_info())
    assert _kernels.openmp_max_threads() == before


_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def _env(**overrides):
    env = {k: v for k, v in os.environ.items() if k not in _THREAD_ENV}
    env.update(overrides)
    return env


def test_omp_num_threads_limits_openmp_and_blas():
    """OMP_NUM_THREADS=1 alone (no OPENBLAS_NUM_THREADS) sets every pool to 1 thread."""
    out = _run_script("""
        import json, numpy as np
        import fastprop
        from fastprop.core import _kernels
        from threadpoolctl import threadpool_info
        X = np.random.default_rng(0).normal(size=(300, 5))
        fastprop.MLPClassifier(max_iter=2).fit(X, X[:, 0] > 0)
        print(json.dumps({"omp": _kernels.openmp_max_threads(),
                          "has_openmp": _kernels.HAS_OPENMP,
                          "pools": threadpool_info()}))
    """, env=_env(OMP_NUM_THREADS="1"))
    assert out["omp"] == 1
    blas = [p for p in out["pools"] if p["user_api"] == "blas"]
    assert blas, out["pools"]
    assert all(p["num_threads"] == 1 for p in blas), blas
    if out["has_openmp"]:
        omp = [p for p in out["pools"] if p["user_api"] == "openmp"]
        assert omp and all(p["num_threads"] == 1 for p in omp), out["pools"]


def _kernels_path():
    return _kernels.__file__


@needs_openmp
@pytest.mark.skipif(not ON_LINUX, reason="reads /proc/self/maps")
def test_the_openmp_runtime_threadpoolctl_lists_is_fastprops():
    """Load the compiled extension alone (without scikit-learn, which brings its own
    libgomp) and compare the OpenMP library it maps in with threadpoolctl's entry; then
    limit that library alone, by path, and see fastprop's OpenMP thread count follow."""
    out = _run_script(f"""
        import importlib.util, json, os
        def mapped():
            with open("/proc/self/maps") as f:
                return {{l.split()[-1] for l in f if l.split()[-1].startswith("/")}}
        before = mapped()
        spec = importlib.util.spec_from_file_location("fastprop.core._kernels",
                                                      {_kernels_path()!r})
        k = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(k)
        new = sorted(mapped() - before)
        from threadpoolctl import ThreadpoolController, threadpool_info
        omp = [p for p in threadpool_info() if p["user_api"] == "openmp"]
        default = k.openmp_max_threads()
        paths = [p["filepath"] for p in omp]
        with ThreadpoolController().select(filepath=paths).limit(limits=1):
            limited = k.openmp_max_threads()
        print(json.dumps({{"new": new, "omp": omp, "default": default,
                          "limited": limited, "after": k.openmp_max_threads(),
                          "sklearn": "sklearn" in __import__("sys").modules}}))
    """)
    assert not out["sklearn"]
    new_omp = {os.path.realpath(p) for p in out["new"]
               if os.path.basename(p).startswith(("libgomp", "libomp", "libiomp"))}
    assert new_omp, out["new"]  # the extension brought an OpenMP runtime in
    listed = {os.path.realpath(p["filepath"]) for p in out["omp"]}
    assert listed == new_omp, (listed, new_omp)
    assert out["limited"] == 1
    assert out["after"] == out["default"]

    # and, in this process (scikit-learn imported too), that runtime is among those listed
    here = {os.path.realpath(p["filepath"]) for p in threadpool_info()
            if p["user_api"] == "openmp"}
    assert new_omp <= here, (new_omp, here)
    # limiting it alone (by path) limits fastprop; the other runtimes are irrelevant
    with ThreadpoolController().select(
            filepath=[p["filepath"] for p in threadpool_info()
                      if os.path.realpath(p["filepath"]) in new_omp]).limit(limits=1):
        assert _kernels.openmp_max_threads() == 1


def _pool_sizes():
    """In a joblib worker: fastprop's OpenMP threads and the BLAS pools' sizes, after a fit."""
    import numpy as np
    from threadpoolctl import threadpool_info

    import fastprop
    from fastprop.core import _kernels
    X = np.random.default_rng(0).normal(size=(200, 5))
    fastprop.MLPClassifier(max_iter=2).fit(X, X[:, 0] > 0)
    return (_kernels.openmp_max_threads(),
            sorted({p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}),
            os.getpid())


def test_loky_workers_do_not_oversubscribe():
    """joblib's process workers (loky) limit every pool to cpu_count // n_jobs threads;
    fastprop's OpenMP and BLAS pools follow, so 2 workers use the cores, no more."""
    n_jobs = 2
    expected = max(joblib.cpu_count() // n_jobs, 1)
    with joblib.parallel_backend("loky"):
        res = joblib.Parallel(n_jobs=n_jobs)(joblib.delayed(_pool_sizes)() for _ in range(4))
    assert all(pid != os.getpid() for *_, pid in res)  # ran in worker processes
    for omp, blas, _ in res:
        if _kernels.HAS_OPENMP:
            assert omp == expected
        assert blas == [expected], res


# ---------------------------------------------------------------------------------------
# 4. Dask: GridSearchCV on a dask.distributed cluster
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dask_client():
    distributed = importlib.import_module("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def _search_both_ways(client, pipe, grid, X, y):
    from distributed import get_task_stream

    # the workers' BLAS runs 1 thread (distributed sets OMP_NUM_THREADS=1 etc. for
    # them); the local search does the same, so both compute the same bits
    with threadpool_limits(1):
        local = GridSearchCV(pipe, grid, cv=3, n_jobs=1).fit(X, y)
    with get_task_stream(client) as stream:
        with joblib.parallel_backend("dask"):
            remote = GridSearchCV(pipe, grid, cv=3, n_jobs=-1).fit(X, y)
    workers = set(client.scheduler_info()["workers"])
    ran_on = {t["worker"] for t in stream.data}
    assert ran_on and ran_on <= workers, (ran_on, workers)
    return local, remote


def _assert_same_search(local, remote):
    np.testing.assert_array_equal(remote.cv_results_["mean_test_score"],
                                  local.cv_results_["mean_test_score"])
    np.testing.assert_array_equal(remote.cv_results_["std_test_score"],
                                  local.cv_results_["std_test_score"])
    assert remote.best_params_ == local.best_params_
    assert [p for p in remote.cv_results_["params"]] == [p for p in local.cv_results_["params"]]


@pytest.mark.slow
def test_dask_gridsearch_classifier_pipeline(dask_client):
    X, y = make_classification(n_samples=600, n_features=12, n_informative=6, n_classes=3,
                               random_state=0)
    pipe = Pipeline([("scale", StandardScaler()),
                     ("mlp", MLPClassifier(max_iter=30, random_state=0))])
    grid = {"mlp__hidden_layer_sizes": [(8,), (32,)], "mlp__alpha": [1e-4, 3.0]}
    local, remote = _search_both_ways(dask_client, pipe, grid, X, y)
    _assert_same_search(local, remote)
    # distinct scores: the comparison is not vacuous
    assert len(set(local.cv_results_["mean_test_score"])) > 1


@pytest.mark.slow
def test_dask_gridsearch_regressor_pipeline(dask_client):
    X, y = make_regression(n_samples=600, n_features=10, noise=5.0, random_state=0)
    pipe = Pipeline([("scale", StandardScaler()),
                     ("mlp", MLPRegressor(max_iter=40, learning_rate_init=0.01,
                                          random_state=0))])
    grid = {"mlp__hidden_layer_sizes": [(16,), (32, 16)], "mlp__alpha": [1e-4, 10.0]}
    local, remote = _search_both_ways(dask_client, pipe, grid, X, y)
    _assert_same_search(local, remote)
    assert len(set(local.cv_results_["mean_test_score"])) > 1


@pytest.mark.slow
def test_dask_workers_run_one_thread_per_pool(dask_client):
    """distributed starts its worker processes with OMP_NUM_THREADS=1 (and OpenBLAS/MKL
    likewise): fastprop's OpenMP and BLAS pools in the workers follow, so 2 workers x 1
    thread use the 2 cores without oversubscribing them."""
    res = dask_client.run(_pool_sizes)
    assert len(res) == 2
    for omp, blas, pid in res.values():
        assert pid != os.getpid()
        assert blas == [1], res
        if _kernels.HAS_OPENMP:
            assert omp == 1, res


def _fit_and_report(est, X, y):
    """Runs on a worker: fit, and say where."""
    with threadpool_limits(1):
        est.fit(X, y)
    return est, os.getpid()


@pytest.mark.slow
def test_dask_fitted_model_round_trips(dask_client):
    """A model fitted on a worker comes back (pickled) equal to a local fit, and keeps
    its optimizer state: partial_fit continues where the worker left off."""
    X, y = make_classification(n_samples=800, n_features=10, random_state=1)
    est = MLPClassifier(hidden_layer_sizes=(16,), max_iter=10, random_state=0)
    remote, pid = dask_client.submit(_fit_and_report, est, X, y, pure=False).result()
    assert pid != os.getpid()
    with threadpool_limits(1):
        local = MLPClassifier(hidden_layer_sizes=(16,), max_iter=10, random_state=0).fit(X, y)
        _same_model(local, remote)
        np.testing.assert_array_equal(local.predict_proba(X), remote.predict_proba(X))
        local.partial_fit(X, y)
        remote.partial_fit(X, y)
    _same_model(local, remote)


# ---------------------------------------------------------------------------------------
# 5. Larger than memory: partial_fit over blocks
# ---------------------------------------------------------------------------------------

def _blocks_data(n=3000, d=20, seed=0):
    X, y = make_classification(n_samples=n, n_features=d, n_informative=8, n_classes=3,
                               random_state=seed)
    return X.astype(np.float32), y


def _manual_partial_fit(make, X, y, block, classes, epochs=1):
    est = make()
    for _ in range(epochs):
        for start in range(0, X.shape[0], block):
            est.partial_fit(X[start:start + block], y[start:start + block], classes=classes)
    return est


def test_incremental_trains_block_by_block():
    dask = importlib.import_module("dask")
    da = importlib.import_module("dask.array")
    wrappers = importlib.import_module("dask_ml.wrappers")
    X, y = _blocks_data()
    classes = np.unique(y)
    block = 500
    Xd = da.from_array(X, chunks=(block, X.shape[1]))
    yd = da.from_array(y, chunks=block)

    def make():
        return MLPClassifier(hidden_layer_sizes=(16,), random_state=0)

    with dask.config.set(scheduler="threads"), threadpool_limits(1):
        inc = wrappers.Incremental(make(), shuffle_blocks=False).fit(Xd, yd, classes=classes)
        manual = _manual_partial_fit(make, X, y, block, classes)
        est = inc.estimator_
        assert isinstance(est, MLPClassifier)
        assert est.t_ == X.shape[0]  # every sample seen once, one partial_fit per block
        _same_model(est, manual)
        # more passes: Incremental.partial_fit continues the same model
        inc.partial_fit(Xd, yd, classes=classes)
        assert inc.estimator_.t_ == 2 * X.shape[0]
        manual2 = _manual_partial_fit(make, X, y, block, classes, epochs=2)
        _same_model(inc.estimator_, manual2)
        # and predicts block by block, lazily
        pred = inc.predict(Xd)
        assert isinstance(pred, da.Array)
        np.testing.assert_array_equal(pred.compute(), manual2.predict(X))


@pytest.mark.slow
def test_incremental_on_the_cluster(dask_client):
    da = importlib.import_module("dask.array")
    wrappers = importlib.import_module("dask_ml.wrappers")
    X, y = _blocks_data(seed=2)
    classes = np.unique(y)
    Xd = da.from_array(X, chunks=(600, X.shape[1]))
    yd = da.from_array(y, chunks=600)

    def make():
        return MLPClassifier(hidden_layer_sizes=(16,), random_state=0)

    # runs on the default scheduler: the fixture's distributed Client
    inc = wrappers.Incremental(make(), shuffle_blocks=False).fit(Xd, yd, classes=classes)
    with threadpool_limits(1):
        manual = _manual_partial_fit(make, X, y, 600, classes)
    assert inc.estimator_.t_ == X.shape[0]
    _same_model(inc.estimator_, manual)


def test_memmap_blocks_equal_in_memory_blocks(tmp_path):
    X, y = _blocks_data(seed=3)
    classes = np.unique(y)
    path = tmp_path / "X.f32"
    mm = np.memmap(path, dtype=np.float32, mode="w+", shape=X.shape)
    mm[:] = X
    mm.flush()
    del mm
    Xm = np.memmap(path, dtype=np.float32, mode="r", shape=X.shape)

    def make():
        return MLPRegressor(hidden_layer_sizes=(16,), random_state=0)

    yr = (y == 1).astype(np.float64)
    with threadpool_limits(1):
        from_disk = make()
        in_memory = make()
        for _ in range(2):
            for start in range(0, X.shape[0], 256):
                from_disk.partial_fit(Xm[start:start + 256], yr[start:start + 256])
                in_memory.partial_fit(X[start:start + 256], yr[start:start + 256])
        assert from_disk.t_ == in_memory.t_ == 2 * X.shape[0]
        _same_model(from_disk, in_memory)
        clf_disk = _manual_partial_fit(
            lambda: MLPClassifier(hidden_layer_sizes=(16,), random_state=0), Xm, y, 256, classes)
        clf_mem = _manual_partial_fit(
            lambda: MLPClassifier(hidden_layer_sizes=(16,), random_state=0), X, y, 256, classes)
        _same_model(clf_disk, clf_mem)


# Peak memory, measured in a fresh process. Anonymous memory (RssAnon in
# /proc/self/status: heap, numpy arrays, thread stacks) is what a training run costs;
# the memmap's pages are file-backed and clean, they count in RssFile, and the kernel
# drops them under memory pressure -- a 400 MB file read through a mapping may well sit
# in the RSS afterwards without being memory the process needs. So the bound is on
# RssAnon, sampled every millisecond by a thread (the kernels release the GIL, so the
# sampler runs during training) and after every block. As a second measure that misses
# no short-lived peak, the kernel's own high-water mark (VmHWM, reset through
# /proc/self/clear_refs where allowed) with the mapping's pages released after each block
# (madvise MADV_DONTNEED: the file's pages leave this process's RSS, so only about one
# block of them can count).
_MEMORY_SCRIPT = r"""
import json, mmap, os, sys, threading, time
import numpy as np

xpath, ypath, n, d, block, mode = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6]), sys.argv[6]

def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)

import fastprop
from threadpoolctl import threadpool_limits
if mode == "incremental":
    import dask, dask.array as da
    from dask_ml.wrappers import Incremental

    def read_rows(path, dtype, shape, start, stop):
        return np.memmap(path, dtype=dtype, mode="r", shape=shape)[start:stop]

    def memmap_dask_array(path, dtype, shape, block):
        blocks = [da.from_delayed(dask.delayed(read_rows)(path, dtype, shape, s,
                                                          min(s + block, shape[0])),
                                  shape=(min(s + block, shape[0]) - s, *shape[1:]),
                                  dtype=dtype)
                  for s in range(0, shape[0], block)]
        return da.concatenate(blocks)

X = np.memmap(xpath, dtype=np.float32, mode="r", shape=(n, d))
y = np.memmap(ypath, dtype=np.int8, mode="r", shape=(n,))
classes = np.array([0, 1], dtype=np.int8)

def make():
    return fastprop.MLPClassifier(hidden_layer_sizes=(16,), random_state=0)

# warm up: first partial_fit allocates what any training needs (buffers, caches)
make().partial_fit(np.asarray(X[:block]), np.asarray(y[:block]), classes=classes)
X._mmap.madvise(mmap.MADV_DONTNEED)

peak = {"anon": status("RssAnon")}
base_anon = peak["anon"]
base_rss = status("VmRSS")
hwm_reset = False
if mode == "loop":  # the dask path keeps the mapping's pages: VmHWM is not meaningful
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        hwm_reset = True
    except OSError:
        pass
stop = threading.Event()

def sample():
    while not stop.is_set():
        peak["anon"] = max(peak["anon"], status("RssAnon"))
        time.sleep(0.001)

sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
t0 = time.perf_counter()
with threadpool_limits(1):
    if mode == "loop":
        est = make()
        for start in range(0, n, block):
            est.partial_fit(X[start:start + block], y[start:start + block], classes=classes)
            peak["anon"] = max(peak["anon"], status("RssAnon"))
            X._mmap.madvise(mmap.MADV_DONTNEED)
    else:
        # One task per block opens the file and returns a view of its rows: the dask
        # array never holds the data. (Not da.from_array(X): since dask 2024.12 it copies
        # its input, the whole memmap, into memory -- dask/dask#11850.)
        Xd = memmap_dask_array(xpath, np.float32, (n, d), block)
        yd = memmap_dask_array(ypath, np.int8, (n,), block)
        with dask.config.set(scheduler="sync"):
            est = Incremental(make(), shuffle_blocks=False).fit(
                Xd, yd, classes=classes).estimator_
elapsed = time.perf_counter() - t0
stop.set()
sampler.join()
print(json.dumps({
    "t_": int(est.t_), "n": n, "elapsed": elapsed, "data_bytes": int(X.nbytes),
    "anon_increase": peak["anon"] - base_anon,
    "hwm_increase": status("VmHWM") - base_rss if hwm_reset else None,
    "rss_file_end": status("RssFile"),
}))
"""


@pytest.fixture(scope="module")
def big_memmap(tmp_path_factory):
    """~400 MB of float32 features (1,000,000 x 100) and int8 labels on disk, written in
    blocks (never whole in memory)."""
    n, d, chunk = 1_000_000, 100, 50_000
    root = tmp_path_factory.mktemp("memmap")
    xpath, ypath = root / "X.f32", root / "y.i8"
    X = np.memmap(xpath, dtype=np.float32, mode="w+", shape=(n, d))
    y = np.memmap(ypath, dtype=np.int8, mode="w+", shape=(n,))
    rng = np.random.default_rng(0)
    w = rng.normal(size=d).astype(np.float32)
    for start in range(0, n, chunk):
        Xb = rng.standard_normal(size=(chunk, d), dtype=np.float32)
        X[start:start + chunk] = Xb
        y[start:start + chunk] = (Xb @ w > 0)
    X.flush()
    y.flush()
    del X, y
    yield str(xpath), str(ypath), n, d
    os.remove(xpath)
    os.remove(ypath)


def _memory_run(big_memmap, mode):
    xpath, ypath, n, d = big_memmap
    block = 25_000  # 25,000 x 100 float32 = 10 MB
    proc = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, xpath, ypath, str(n), str(d),
                           str(block), mode], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(not ON_LINUX, reason="reads /proc/self/status")
def test_partial_fit_loop_over_memmap_memory_is_bounded_by_a_block(big_memmap):
    out = _memory_run(big_memmap, "loop")
    assert out["t_"] == out["n"]
    assert out["data_bytes"] >= 400e6
    limit = 150e6  # data 400 MB, block 10 MB
    assert out["anon_increase"] < limit, out
    if out["hwm_increase"] is not None:
        assert out["hwm_increase"] < limit, out


@pytest.mark.slow
@pytest.mark.skipif(not ON_LINUX, reason="reads /proc/self/status")
def test_incremental_over_memmapped_dask_array_memory_is_bounded_by_a_block(big_memmap):
    importlib.import_module("dask_ml.wrappers")
    out = _memory_run(big_memmap, "incremental")
    assert out["t_"] == out["n"]
    assert out["anon_increase"] < 150e6, out
