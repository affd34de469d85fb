"""The team beside other processes: its own pool of threads, and the governor that lets
thread 0 go on alone while a member is descheduled (csrc/fp_team.h). Going alone and
back at any minibatch keeps the bits; a fit beside a process spinning on a core stays
close to a one-thread fit (timing: slow)."""

import contextlib
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_array_equal

from fastprop import core
from fastprop.core import _kernels

from .helpers import DTYPES, SOLVERS, csr_split_from, trainer_problem, units_from

needs_governor = pytest.mark.skipif(not _kernels.TEAM_GOVERNOR,
                                    reason="this build's team has no governor")


@contextlib.contextmanager
def governor(**settings):
    old = _kernels._set_team_governor(**settings)
    try:
        yield
    finally:
        _kernels._set_team_governor(**old)


# Every window sends thread 0 alone, and every solo period ends at the next minibatch:
# the team leaves and rejoins every few minibatches.
FLIP = {"on": True, "idle": -1.0, "window": 0.0, "probe": 0.0, "solo": 0.0, "solo_max": 0.0}


def _epochs(kind, dtype, solver, n_threads):
    """Two epochs of a team pass of ``kind`` under a thread limit; what they produced."""
    from threadpoolctl import threadpool_limits

    if kind == "units":
        p, params = trainer_problem("log_loss", dtype, activation="relu", n=900,
                                     sizes=(300, 256, 3), seed=24, weighted=True)
        batch, X, ctx = 32, p.X, units_from(1)
    else:
        p, params = trainer_problem("log_loss", dtype, activation="relu", n=1500,
                                     sizes=(30, 64, 32, 3), seed=21, weighted=True)
        batch, X, ctx = 256, p.X, contextlib.nullcontext()
        if kind == "rows-csr":
            rng = np.random.default_rng(3)
            X = core.csr_parts(sp.csr_matrix(p.X * (rng.uniform(size=p.X.shape) < 0.3)))
            ctx = csr_split_from(0)  # too little work to split at the production threshold
    orders = [np.random.default_rng(e).permutation(p.X.shape[0])[:-100].astype(np.intp)
              for e in range(2)]
    with ctx, threadpool_limits(limits=n_threads):
        trainer = core.Trainer(p.sizes, "relu", "log_loss", params.copy(), **SOLVERS[solver])
        accs = [trainer.run_epoch(X, p.Y, batch_size=batch, alpha=1e-3,
                                  sample_weight=p.sample_weight, order=o) for o in orders]
    return accs, trainer.params, trainer.state_1, trainer.state_2, trainer.counter


@needs_governor
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("solver", ["adam", "sgd-nesterov"])
@pytest.mark.parametrize("kind", ["rows", "rows-csr", "units"])
def test_going_alone_and_back_keeps_the_bits(kind, solver, dtype):
    """Thread 0 alone for some minibatches, the team for others, switching every few
    minibatches: the same bits as one thread and as a team that never switches."""
    with governor(on=False):
        one = _epochs(kind, dtype, solver, 1)
        team = _epochs(kind, dtype, solver, 2)
    before = _kernels._team_governor_stats()[0]
    with governor(**FLIP):
        flipping = _epochs(kind, dtype, solver, 2)
    assert _kernels._team_governor_stats()[0] - before >= 4  # it did go alone, often
    for a, b, c in zip(one, team, flipping):
        assert_array_equal(np.asarray(a), np.asarray(b))
        assert_array_equal(np.asarray(a), np.asarray(c))


@needs_governor
def test_a_solo_period_carries_over_to_the_next_pass():
    """A pass that ends alone in a solo period hands the rest of it to the next pass,
    which then runs on its caller alone, with the same bits."""
    with governor(on=False):
        one = _epochs("rows", np.float64, "adam", 1)
    with governor(on=True, idle=-1.0, window=0.0, probe=0.0, solo=60.0, solo_max=60.0):
        starts = _kernels._team_governor_stats()[1]
        carried = _epochs("rows", np.float64, "adam", 2)
        assert _kernels._team_governor_stats()[1] - starts == 1  # the second epoch
    # the carried period forgotten when the settings change (a governor that never finds
    # the team idle, so that a busy machine cannot start a new period here)
    with governor(on=True, idle=1.01):
        starts = _kernels._team_governor_stats()[1]
        _epochs("rows", np.float64, "adam", 2)
        assert _kernels._team_governor_stats()[1] == starts
    for a, b in zip(one, carried):
        assert_array_equal(np.asarray(a), np.asarray(b))


@needs_governor
def test_a_quiet_team_stays_a_team():
    """A governor that never finds the team idle never sends thread 0 alone."""
    with governor(on=True, idle=1.01):
        before = _kernels._team_governor_stats()
        _epochs("rows", np.float32, "adam", 2)
        assert _kernels._team_governor_stats() == before


@pytest.mark.skipif(not _kernels.OWN_POOL, reason="this build's team is OpenMP's")
def test_the_pool_keeps_its_threads_between_passes():
    """A team of two takes one pool thread, started once and reused by every pass."""
    _epochs("rows", np.float64, "adam", 2)
    started = _kernels._pool_threads()
    assert started >= 1
    for _ in range(3):
        _epochs("rows", np.float64, "adam", 2)
    assert _kernels._pool_threads() == started


@pytest.mark.skipif(not _kernels.OWN_POOL, reason="this build's team is OpenMP's")
def test_pool_threads_sleep_between_passes():
    """After a pass the pool's threads take no CPU time: they sleep, where OpenMP's
    threads spun for milliseconds and took a core from the caller beside a busy
    process."""
    _epochs("rows", np.float64, "adam", 2)
    time.sleep(0.05)
    tasks = f"/proc/{os.getpid()}/task"
    if not os.path.isdir(tasks):
        pytest.skip("no /proc here")

    def cpu_ticks():
        out = {}
        for t in os.listdir(tasks):
            try:
                with open(f"{tasks}/{t}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[t] = int(fields[11]) + int(fields[12])
        return out

    me = str(__import__("threading").get_native_id())
    _epochs("rows", np.float64, "adam", 2)
    a = cpu_ticks()
    time.sleep(0.3)
    b = cpu_ticks()
    busy = {t: b[t] - a[t] for t in b if t in a and t != me and b[t] - a[t] > 1}
    assert not busy, f"threads took CPU time while fastprop was idle: {busy}"


# -- beside a process that spins on one core (timing) ----------------------------------

SPIN = "import os, sys\nos.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True:\n    pass\n"


@contextlib.contextmanager
def spinning_on_one_core():
    cpus = sorted(os.sched_getaffinity(0))
    proc = subprocess.Popen([sys.executable, "-c", SPIN, str(cpus[-1])])
    try:
        time.sleep(0.3)
        yield
    finally:
        proc.kill()
        proc.wait()


def _fit_seconds(X, y, hidden, batch, n_threads):
    from threadpoolctl import threadpool_limits

    from fastprop import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=hidden, batch_size=batch, max_iter=6, tol=0,
                        random_state=0)
    with threadpool_limits(limits=n_threads), __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore")
        t = time.perf_counter()
        clf.fit(X, y)
        return time.perf_counter() - t


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs two cores and sched_setaffinity")
@pytest.mark.skipif(_kernels.openmp_max_threads() < 2, reason="no team here")
@pytest.mark.parametrize("shape", ["rows", "units"])
def test_beside_a_busy_core_a_fit_keeps_up_with_one_thread(shape):
    """With another process spinning on one core, a fit at the default thread count
    takes at most 1.2x a one-thread fit under the same load (median of interleaved
    pairs). A team waiting for a descheduled member took 1.4-26x."""
    rng = np.random.RandomState(0)
    if shape == "rows":  # minibatches split by rows
        X, hidden, batch = rng.randn(50000, 100).astype(np.float32), (128, 64), 256
    else:  # small minibatches cut by units: the least work per barrier
        X, hidden, batch = rng.randn(16384, 256).astype(np.float32), (64, 64), 64
    y = rng.randint(0, 3, len(X))
    with spinning_on_one_core():
        ratios = []
        for r in range(5):
            if r % 2:
                one = _fit_seconds(X, y, hidden, batch, 1)
                team = _fit_seconds(X, y, hidden, batch, None)
            else:
                team = _fit_seconds(X, y, hidden, batch, None)
                one = _fit_seconds(X, y, hidden, batch, 1)
            ratios.append(team / one)
    assert statistics.median(ratios) <= 1.2, ratios
