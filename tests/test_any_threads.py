"""One fit on any number of threads: the partition of every pass comes from the shapes
(``_kernels.epoch_partition``), P threads only run its fixed parts, so the model is bitwise
the same for every P; P follows scikit-learn's convention (``core._team.threads``). Each
P runs in a subprocess with ``OMP_NUM_THREADS`` (this machine is oversubscribed on
purpose: correctness does not need the cores)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from fastprop.core import _kernels

needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="no /proc here")


def _run(code, threads, timeout=600):
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, check=False,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# Fits covering every kind of pass (whole, rows, units; rows in 2-4 parts, units in 2 and
# 4), sparse rows, and every solver, in both dtypes; each prints its partition and the
# hash of its coefs_ and intercepts_.
FITS = """
import hashlib, json, warnings
import numpy as np, scipy.sparse as sp
from fastprop import MLPClassifier, MLPRegressor
from fastprop.core import _kernels
warnings.simplefilter("ignore")
rng = np.random.RandomState(0)
X = rng.randn(1500, 100)
y = rng.randint(0, 3, len(X))
Xs = sp.csr_matrix(np.where(np.abs(X) > 1.2, X, 0.0))
cases = [  # kind, hidden, batch, solver, sparse X, regressor, the options beyond these
    ("whole", (64,), 32, "adam", False, False, {}),
    ("rows", (256,), 256, "adam", False, False, {}),        # 4 parts
    ("rows", (128, 64), 200, "sgd", False, False, {}),      # 3 parts, nesterov momentum
    ("units", (512, 512), 100, "adam", False, False, {}),   # 4 parts
    ("units", (1024,), 64, "sgd", False, False, {}),        # 2 parts
    ("rows", (256,), 512, "adam", True, False, {}),         # sparse, by rows
    ("lbfgs", (128,), 200, "lbfgs", False, False, {}),      # blocks in halves
    ("regress", (256,), 256, "adam", False, True, {}),
    ("rows", (128, 64), 200, "rmsprop", False, False, {}),  # 3 parts
    ("units", (512, 512), 100, "adamw", False, False, {}),  # 4 parts
    ("rows", (256,), 512, "adamw", True, False, {}),        # sparse, by rows
    ("rows", (256,), 256, "adam", False, True, {"loss": "huber", "huber_delta": 0.5}),
    ("units", (1024,), 64, "sgd", False, True, {"loss": "huber", "huber_delta": 0.5}),
    ("rows", (128, 64), 200, "sgd", False, False, {"dropout": 0.2}),        # 3 parts
    ("units", (512, 512), 100, "adam", False, False, {"dropout": (0.3, 0.1)}),
    ("rows", (256,), 512, "adam", True, False, {"dropout": 0.5}),           # sparse
    ("units", (512, 512), 100, "adam", False, False, {"activation": "gelu"}),  # keeps Z
    ("rows", (128, 64), 200, "sgd", False, False, {"activation": "gelu"}),
    ("units", (1024,), 64, "sgd", False, False, {"activation": "leaky_relu"}),
    ("rows", (256,), 256, "adam", False, False, {"activation": "softplus"}),
    ("units", (512, 512), 100, "adam", False, False,
     {"activation": "silu", "dropout": 0.3, "max_grad_norm": 1.0}),
    ("rows", (256,), 256, "rmsprop", False, False,
     {"activation": "elu", "dropout": 0.2, "max_grad_norm": 0.5}),
]
out = []
for dtype in (np.float32, np.float64):
    for kind, hidden, batch, solver, sparse, regress, options in cases:
        Xd = (Xs if sparse else X).astype(dtype)
        est = (MLPRegressor if regress else MLPClassifier)(
            hidden_layer_sizes=hidden, batch_size=batch, solver=solver, max_iter=3,
            random_state=0, nesterovs_momentum=True, momentum=0.9, tol=0, **options)
        est.fit(Xd, X[:, 0] if regress else y)
        sizes = np.array([100, *hidden, 1 if regress else 3], dtype=np.intp)
        part = (_kernels.epoch_partition(sizes, batch, Xd.nnz, Xd.shape[0]) if sparse
                else _kernels.epoch_partition(sizes, batch))
        h = hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes()
                                    for a in est.coefs_ + est.intercepts_)).hexdigest()
        out.append([kind, str(np.dtype(dtype)), list(part), h])
print(json.dumps(out))
"""


@pytest.mark.skipif(not _kernels.HAS_OPENMP, reason="built without OpenMP: one thread")
def test_model_is_bitwise_the_same_for_any_thread_count():
    runs = {p: _run(FITS, p) for p in (1, 2, 3, 4, 8)}
    base = runs[1]
    kinds = {(r[0], r[2][0], r[2][1]) for r in base}
    # the fits cover what they claim: each kind of pass, and parts beyond two
    assert {k[1] for k in kinds} == {"whole", "rows", "units"}, kinds
    assert any(k[1] == "rows" and k[2] >= 4 for k in kinds), kinds
    assert any(k[1] == "units" and k[2] >= 4 for k in kinds), kinds
    for p, run in runs.items():
        assert [r[3] for r in run] == [r[3] for r in base], (p, run, base)
    assert len({r[3] for r in base}) == len(base)  # the fits differ from one another


BUSY = """
import json, os, warnings
import numpy as np
from fastprop import MLPClassifier
from fastprop.core import _kernels, _team
warnings.simplefilter("ignore")

def cpu():
    ticks = {}
    for t in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{t}/stat") as f:
                s = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks[t] = int(s[11]) + int(s[12])  # utime + stime
    return ticks

rng = np.random.RandomState(0)
X = rng.randn(20000, 100).astype(np.float32)
y = rng.randint(0, 3, len(X))
parts = _kernels.epoch_partition(np.array([100, 256, 3], dtype=np.intp), 256)
before = cpu()
MLPClassifier(hidden_layer_sizes=(256,), batch_size=256, max_iter=15, tol=0,
              random_state=0).fit(X, y)
after = cpu()
main = after[str(os.getpid())] - before.get(str(os.getpid()), 0)
spent = sorted((after[t] - before.get(t, 0) for t in after), reverse=True)
print(json.dumps({"parts": list(parts), "threads": _team.threads(), "main": main,
                  "spent": spent}))
"""


@needs_proc
@pytest.mark.skipif(not _kernels.OWN_POOL, reason="the team is OpenMP's here")
@pytest.mark.parametrize("p", [4, 3])
def test_a_fit_keeps_its_threads_busy(p):
    """With OMP_NUM_THREADS=p, a fit whose minibatches are cut into 4 parts keeps p
    threads (at most one per part) busy: each accumulates a fair share of the CPU
    time of the fit's own thread."""
    r = _run(BUSY, p)
    assert r["parts"][:2] == ["rows", 4] and r["threads"] == p, r
    busy = [t for t in r["spent"] if t >= 0.25 * r["main"]]
    assert len(busy) == p, r


THREADS = """
import json, os
from threadpoolctl import threadpool_limits
from fastprop.core import _team
out = {"default": _team.threads(), "cores": _team._cores()}
with threadpool_limits(limits=5):
    out["limits5"] = _team.threads()
with threadpool_limits(limits=1):
    out["limits1"] = _team.threads()
print(json.dumps(out))
"""


@pytest.mark.skipif(not _kernels.HAS_OPENMP, reason="built without OpenMP: one thread")
def test_thread_count_follows_scikit_learn():
    """P: an explicit OMP_NUM_THREADS or threadpool_limits as given, even above the
    cores; otherwise the cores the process may use."""
    free = _run(THREADS, None)
    assert free["default"] == free["cores"]
    assert free["limits5"] == 5 and free["limits1"] == 1
    assert _run(THREADS, 7)["default"] == 7
    assert _run(THREADS, 1)["default"] == 1


SIDE_BY_SIDE = """
import json, os, threading, time, warnings
import numpy as np
from fastprop import MLPClassifier
from fastprop.core import _kernels, _team
warnings.simplefilter("ignore")
k = int(os.environ["FP_TEST_FITS"])
tasks = f"/proc/{os.getpid()}/task"

def running(me):
    n = 0
    for t in os.listdir(tasks):
        if t == me:
            continue
        try:
            with open(f"{tasks}/{t}/stat") as f:
                n += f.read().rsplit(")", 1)[1].split()[0] == "R"
        except OSError:
            pass
    return n

rng = np.random.RandomState(0)
X = rng.randn(6000, 100).astype(np.float32)
y = rng.randint(0, 3, len(X))
# A pool thread warms its BLAS workspace in its first minibatch (one product, ~10 ms,
# once per thread: fastprop/core/_layers.pxi), so that minibatch runs long, and a fit
# starting meanwhile waits for it with one thread over. One fit first warms the pool's
# threads, as any earlier fit in the process would have.
MLPClassifier(hidden_layer_sizes=(256,), batch_size=256, max_iter=1,
              random_state=0).fit(X[:1024], y[:1024])
stop = threading.Event()
seen, edges = [], []
go = threading.Barrier(k + 1)

def sample():
    me = str(threading.get_native_id())
    while not stop.is_set():
        seen.append((time.perf_counter(), running(me)))
        time.sleep(0.0005)

def fit(i):
    go.wait()
    woken = time.perf_counter() + 0.02 * i
    time.sleep(0.02 * i)
    edges.append((woken, time.perf_counter() + 0.003))
    MLPClassifier(hidden_layer_sizes=(256,), batch_size=256, max_iter=10, tol=0,
                  random_state=i).fit(X, y)
    t = time.perf_counter()
    edges.append((t - 0.003, t + 0.003))

workers = [threading.Thread(target=fit, args=(i,)) for i in range(k)]
for w in workers:
    w.start()
sampler = threading.Thread(target=sample)
sampler.start()
go.wait()
start = time.perf_counter() + 0.003
for w in workers:
    w.join()
stop.set()
sampler.join()
steady = [n for t, n in seen if t > start and not any(a <= t <= b for a, b in edges)]
print(json.dumps({"threads": _team.threads(), "cores": _team._cores(), "steady": steady,
                  "working": _kernels._team_working()}))
"""


@needs_proc
@pytest.mark.skipif(not _kernels.OWN_POOL, reason="the team is OpenMP's here")
@pytest.mark.parametrize("p", [None, 4], ids=["cores", "P4"])
@pytest.mark.parametrize("k", [2, 4])
def test_fits_side_by_side_stay_within_the_budget(k, p):
    """k fits side by side in threads, on the cores (P = the cores) or with
    OMP_NUM_THREADS=4, run at most max(P, k) threads at once: every fit runs on its own
    thread, a fit's team gives its extra threads back while other fits train, and a fit
    that starts waits for that. Threads in state R are counted in /proc while they train.
    Left out: a fit's thread from when it becomes runnable to 3 ms after it starts the
    fit, and 3 ms around its return: runnable as a Python thread outside any fit
    (waiting for a core the team still holds until its next minibatch), which nothing in
    fastprop can see. A sample may still fall on a team finishing the minibatch it was in
    when a fit started (under a millisecond): one thread over, in at most 2 % of the
    samples. The pool's threads are warmed by a fit before (a pool thread's first
    minibatch includes its BLAS warm-up product, ~10 ms)."""
    env_k = os.environ.get("FP_TEST_FITS")
    os.environ["FP_TEST_FITS"] = str(k)
    try:
        r = _run(SIDE_BY_SIDE, p)
    finally:
        if env_k is None:
            os.environ.pop("FP_TEST_FITS", None)
        else:
            os.environ["FP_TEST_FITS"] = env_k
    limit = max(r["threads"], k)
    steady = r["steady"]
    assert r["threads"] == (p or r["cores"]) and len(steady) > 50
    assert max(steady) <= limit + 1, (max(steady), limit, sorted(steady)[-10:])
    assert sum(n > limit for n in steady) <= 0.02 * len(steady)
    assert r["working"] == 0  # every team thread is back in the pool
