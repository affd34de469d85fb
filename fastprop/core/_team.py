"""BLAS on one thread while fastprop trains, and how many threads a pass's team gets.

Every training pass (an epoch, or L-BFGS's pass over the data) runs its BLAS calls on one
thread. The pass is cut into fixed parts by the shapes alone
(``_kernels.epoch_partition``; L-BFGS's blocks in halves, ``_kernels.split_rows``):

- *row* passes cut every minibatch into K parts of rows, *unit* passes every layer's
  units into K parts; a team of up to K threads (fastprop's own pool, csrc/fp_team.h)
  runs them, each thread calling BLAS. Several threads calling a multi-threaded
  OpenBLAS at once would fight over its one pool of workers, and its multi-threaded
  products round differently, so the result would depend on the thread count.
- *whole* passes (the rest) run on the calling thread. At these sizes a second BLAS
  thread costs more than it gains: OpenBLAS's worker spins between the small products
  while the elementwise work waits (benchmarks/README.md); one thread also makes their
  result independent of the thread count.

The team's size is min(K, P - others): P the threads a fit may use (``threads()``,
scikit-learn's convention) and ``others`` the other threads training in the process.

An L-BFGS fit holds BLAS at one thread for the whole fit (``blas_held``), not only for
its passes: SciPy's L-BFGS-B step between two passes calls BLAS too (dot products over
the parameter vector), and a multi-threaded dot product rounds by thread count.

BLAS is held at one thread through threadpoolctl, as scikit-learn's KMeans holds it
around its own OpenMP loops: the first hold limits it (from whichever thread it runs
on), the last one released gives it back, so fits in several threads never see it
change under them. Every pass runs on its calling thread; a team gets more threads only
from what the other passes leave of P, and gives them back, going on alone, as soon as
passes that start later need them (csrc/fp_team.h, "budget"). Passes of fits running
side by side get the same result either way, and k passes run at most max(P, k)
threads.

After ``os.fork()`` the child starts with no holds and no passes (the threads that held
them are not in the child), and gives back a BLAS limit that a pass of the parent held
at the moment of the fork. The compiled side keeps the child's copy of a thread that ran
a team from starting another (csrc/fp_team.h).
"""

import ctypes
import itertools
import os
import threading
import time
from contextlib import contextmanager


from . import _kernels

_lock = threading.Lock()
_holds = 0  # BLAS holds in progress: training passes and whole L-BFGS fits
_busy = {}  # thread ident -> depth: threads in a fit or a training pass (the cores' users)
_limiter = None  # what gives BLAS back, while holds keep it at one thread
_blas = None  # a ThreadpoolController over the BLAS libraries, or False if none is seen
_generation = 0  # bumped by fork: holds and passes of the parent are not the child's


class _OpenBLASDirect:
    """A pthreads OpenBLAS's thread count, read and set through ``ctypes.PyDLL``, whose
    calls keep the GIL: threadpoolctl's calls release it, and a pass started on a worker
    thread while the main thread runs Python then waits up to a switch interval for it
    after each one (tests/test_scaleout.py measures that wait)."""

    def __init__(self, path):
        dll = ctypes.PyDLL(path)
        for prefix, suffix in itertools.product(("", "scipy_"), ("", "64_", "_64")):
            if hasattr(dll, f"{prefix}openblas_get_num_threads{suffix}"):
                self.get = getattr(dll, f"{prefix}openblas_get_num_threads{suffix}")
                self.set = getattr(dll, f"{prefix}openblas_set_num_threads{suffix}")
                break
        else:
            raise OSError(f"no openblas_get_num_threads in {path}")
        self.get.restype = ctypes.c_int
        self.get.argtypes = []
        self.set.restype = None
        self.set.argtypes = [ctypes.c_int]


def _blas_controller():
    """The BLAS libraries to hold: a list of ``_OpenBLASDirect`` when every one is a
    pthreads OpenBLAS (the wheels' case), else a threadpoolctl controller over them; False
    if threadpoolctl sees none."""
    global _blas
    if _blas is None:
        try:
            from threadpoolctl import ThreadpoolController

            ctl = ThreadpoolController().select(user_api="blas")
            _blas = ctl if ctl.lib_controllers else False
            if _blas is not False and all(
                lc.internal_api == "openblas"
                and getattr(lc, "threading_layer", None) == "pthreads"
                for lc in ctl.lib_controllers
            ):
                try:
                    _blas = [_OpenBLASDirect(lc.filepath) for lc in ctl.lib_controllers]
                except OSError:
                    pass  # threadpoolctl's calls, then
        except Exception:  # threadpoolctl missing, or unable to inspect this process
            _blas = False
    return _blas


def _clear_openblas_control():
    # threadpoolctl >= 3.8 lets only one "controlling" thread change a process-wide
    # (pthreads) OpenBLAS's threads and silently ignores the others; a pass may start
    # on any thread, so it takes control for the change and gives it up after.
    try:
        from threadpoolctl import OpenBLASController
    except ImportError:
        return
    clear = getattr(OpenBLASController, "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)


def _hold_blas():
    """Limit BLAS to one thread; return what gives it back (a truthy token), or None if
    that cannot be done (no BLAS that threadpoolctl can see, or the limit did not take)."""
    blas = _blas_controller()
    if blas is False:
        return None
    if isinstance(blas, list):
        previous = [lib.get() for lib in blas]
        for lib in blas:
            lib.set(1)
        return ("direct", previous)
    _clear_openblas_control()
    limiter = blas.limit(limits=1)
    if any(lc.num_threads != 1 for lc in blas.lib_controllers):
        _release_blas(limiter)
        return None
    return limiter


def _release_blas(held):
    if isinstance(held, tuple):
        for lib, n in zip(_blas, held[1]):
            lib.set(n)
        return
    held.restore_original_limits()
    _clear_openblas_control()


@contextmanager
def blas_held():
    """Hold BLAS at one thread for the duration; yield whether the hold took. Holds
    nest and count process-wide: BLAS is given back when the last one ends."""
    global _holds, _limiter
    with _lock:
        generation = _generation
        if _holds == 0:
            _limiter = _hold_blas()
        _holds += 1
        held = _limiter is not None
    try:
        yield held
    finally:
        with _lock:
            if generation == _generation:  # else a fork reset the count in this child
                _holds -= 1
                if _holds == 0 and _limiter is not None:
                    _release_blas(_limiter)
                    _limiter = None


@contextmanager
def split_team(parts):
    """Enter a training pass whose minibatches (or blocks) are cut into ``parts`` fixed
    parts (1 for a whole pass); yield the team size to pass to the kernel: at most one
    thread per part, within the threads the fit may use (``threads()``) less one for each
    other thread training in the process."""
    with blas_held() as held, training():
        with _lock:
            others = len(_busy) - 1
        n_threads = 1
        # every pass runs on its calling thread; a team takes more threads only from
        # what the other passes leave free, and gives them back (goes on alone) when
        # passes that start later need them (csrc/fp_team.h, "budget")
        if held and parts > 1:
            n_threads = max(1, min(parts, threads() - others))
        yield n_threads


@contextmanager
def training():
    """Count the calling thread as training for the duration (a fit, between its passes
    too, or a pass): the threads counted share P (``threads()``), and a team's extra
    threads come only from what none of them uses. Nests within a thread."""
    me = threading.get_ident()
    with _lock:
        generation = _generation
        first = me not in _busy
        _busy[me] = _busy.get(me, 0) + 1
        busy = len(_busy)
        cores = threads()
        _kernels._set_budget(busy, cores, _cores())
    if first:
        # a team that started while the threads were free gives its extra threads back
        # before its next minibatch: wait for that (well under a second) rather than run
        # more threads than P
        deadline = time.monotonic() + 0.5
        while (_kernels._team_working() > 0 and busy + _kernels._team_working() > cores
               and time.monotonic() < deadline):
            time.sleep(0.0002)
    try:
        yield
    finally:
        with _lock:
            if generation == _generation:  # else a fork reset the count in this child
                if _busy[me] == 1:
                    del _busy[me]
                else:
                    _busy[me] -= 1
                _kernels._set_budget(len(_busy), threads(), _cores())


_cgroup_cpus = None
# OpenMP's thread count when nothing set it (OMP_NUM_THREADS unset): a different value
# later was set by threadpoolctl.threadpool_limits (omp_set_num_threads)
_omp_default = None if os.environ.get("OMP_NUM_THREADS") else _kernels.openmp_max_threads()


def threads():
    """P, the threads one fit may use, as scikit-learn counts them
    (``sklearn.utils._openmp_helpers._openmp_effective_n_threads``): an explicit
    ``OMP_NUM_THREADS`` or ``threadpool_limits`` as given, even above the cores;
    otherwise the cores the process may run on (``_cores()``). Fits running side by
    side share them (``split_team``)."""
    omp = _kernels.openmp_max_threads()
    if _omp_default is None or omp != _omp_default:
        return max(1, omp)
    return max(1, min(omp, _cores()))


def _cgroup_quota():
    """The CPUs a cgroup v2 quota allows (``cpu.max``), or 0 when there is none."""
    global _cgroup_cpus
    if _cgroup_cpus is None:
        _cgroup_cpus = 0
        try:
            with open("/sys/fs/cgroup/cpu.max") as f:
                quota, period = f.read().split()[:2]
            if quota != "max":
                _cgroup_cpus = max(1, int(quota) // int(period))
        except (OSError, ValueError):
            pass
    return _cgroup_cpus


def _cores():
    """The cores the process may run on: its CPU affinity (read each pass: a worker may
    change it), within a cgroup CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_quota()
    return min(n, quota) if quota else n


def _after_fork_in_child():
    """The child of ``os.fork()`` has only the forking thread: no pass nor hold of the
    parent's other threads will ever end here. Start from none, with a fresh lock (one
    of them may have held it), and give back a BLAS limit they held."""
    global _lock, _holds, _limiter, _generation
    _lock = threading.Lock()
    _generation += 1
    _holds = 0
    _busy.clear()
    _kernels._set_budget(0, threads(), _cores())
    limiter, _limiter = _limiter, None
    if limiter is not None:
        try:
            _release_blas(limiter)
        except Exception:  # noqa: BLE001 - never fail the fork over a thread count
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
