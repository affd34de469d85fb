"""How many threads a split-minibatch epoch may use, and BLAS on one thread meanwhile.

A split epoch (``_kernels.train_epoch`` with ``split_rows(batch_size) > 0``) runs the two
halves of every minibatch on an OpenMP team of two threads, each calling BLAS. Two
threads calling a multi-threaded OpenBLAS at once would fight over its one pool of
workers, so while such an epoch runs, BLAS is held at one thread through threadpoolctl,
the way scikit-learn's KMeans holds it around its own OpenMP loops.

The model does not depend on the team size, so the choice below is free to follow what
the process is doing: two threads only when OpenMP offers two, threadpoolctl can see the
BLAS, and no other split epoch in this process holds the team already. A second epoch
running meanwhile (fits in threads, threaded grid search) runs on its own thread instead
of oversubscribing the cores. Only the holder limits BLAS and puts it back, so concurrent fits cannot leave
it limited.
"""

import threading
from contextlib import contextmanager

from . import _kernels

_lock = threading.Lock()
_limiter = None  # set while a split epoch holds the two-thread team
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


@contextmanager
def split_team(batch_size):
    """Yield the team size (1 or 2) for an epoch of ``batch_size``-row minibatches."""
    global _limiter
    if not (_kernels.split_rows(batch_size) and _kernels.openmp_max_threads() >= 2):
        yield 1
        return
    with _lock:
        blas = _blas_controller() if _limiter is None else False
        if blas is not False:
            _limiter = blas.limit(limits=1)
    if blas is False:
        # the team is taken, or BLAS cannot be held at one thread: run on this thread
        yield 1
        return
    try:
        yield 2
    finally:
        with _lock:
            _limiter.restore_original_limits()
            _limiter = None
