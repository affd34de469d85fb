"""Who may run a training pass now, on how many threads, and with BLAS on how many.

Training passes come in two kinds (``_kernels.split_rows`` decides, from the minibatch
or block length alone):

- *split* passes cut every minibatch in two halves, run by an OpenMP team of up to two
  threads, each calling BLAS. Their result does not depend on the team size only if
  every BLAS call runs on one thread (OpenBLAS's multi-threaded products round
  differently), so BLAS is held at one thread through threadpoolctl while they run,
  the way scikit-learn's KMeans holds it around its own OpenMP loops; and two threads
  calling a multi-threaded OpenBLAS at once would fight over its one pool of workers.
- *whole* passes run on the calling thread with BLAS as the user configured it (its
  threads, if any, serve the large products).

A whole pass must not see BLAS's thread count change under it (its result would then
differ from the same fit run alone), so the two kinds never run at the same time: passes
of one kind share the process, the other kind waits for them to finish (fits in threads
that mix kinds take turns, pass by pass). The first split pass in limits BLAS (from whichever
thread it runs on), the last one out gives it back. The two-thread team goes to one split pass at a time; a second
runs on its own thread meanwhile, so threads never oversubscribe the cores, and its
result is the same either way.
"""

import threading
from contextlib import contextmanager

from . import _kernels

_cond = threading.Condition()
_kind = None  # "split" or "whole" while passes of that kind run
_running = 0  # how many passes run
_waiting = {"split": 0, "whole": 0}
_turn = None  # the kind an emptied room was handed to (its waiters go first)
_team_taken = False
_limiter = None  # threadpoolctl's limiter while split passes hold BLAS at one thread
_blas = None  # a ThreadpoolController over the BLAS libraries, or False if none is seen


def _blas_controller():
    global _blas
    if _blas is None:
        try:
            from threadpoolctl import ThreadpoolController

            ctl = ThreadpoolController().select(user_api="blas")
            _blas = ctl if ctl.lib_controllers else False
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
    """Limit BLAS to one thread; return the limiter, or None if that cannot be done
    (no BLAS that threadpoolctl can see, or the limit did not take)."""
    blas = _blas_controller()
    if blas is False:
        return None
    _clear_openblas_control()
    limiter = blas.limit(limits=1)
    if any(lc.num_threads != 1 for lc in blas.lib_controllers):
        _release_blas(limiter)
        return None
    return limiter


def _release_blas(limiter):
    limiter.restore_original_limits()
    _clear_openblas_control()


def _other(kind):
    return "whole" if kind == "split" else "split"


def _may_enter(kind):
    other = _other(kind)
    if _running == 0:
        return _turn in (None, kind)
    # join passes of the same kind, unless the other kind is waiting for its turn
    return _kind == kind and _waiting[other] == 0


@contextmanager
def split_team(rows):
    """Enter a training pass over minibatches (or blocks) of ``rows`` rows; yield the
    team size to pass to the kernel (1 or 2; always 1 for a whole pass)."""
    global _kind, _running, _team_taken, _limiter, _turn
    kind = "split" if _kernels.split_rows(rows) else "whole"
    with _cond:
        _waiting[kind] += 1
        try:
            while not _may_enter(kind):
                _cond.wait()
        finally:
            _waiting[kind] -= 1
        if _running == 0 and kind == "split":
            _limiter = _hold_blas()
        _kind = kind
        _turn = None
        _running += 1
        n_threads = 1
        if (kind == "split" and not _team_taken and _limiter is not None
                and _kernels.openmp_max_threads() >= 2):
            _team_taken = True
            n_threads = 2
    try:
        yield n_threads
    finally:
        with _cond:
            _running -= 1
            if n_threads == 2:
                _team_taken = False
            if _running == 0:
                if _limiter is not None:
                    _release_blas(_limiter)
                    _limiter = None
                # hand the room to the other kind if it waits, so neither starves
                _turn = _other(_kind) if _waiting[_other(_kind)] else None
                _kind = None
            _cond.notify_all()
