"""What each thread of this process has done: CPU time and scheduler waits.

Linux keeps, per thread, the CPU time it ran and the time it waited in the scheduler's
run queue (``/proc/thread-self/schedstat``, ``/proc/self/task/<tid>/schedstat``).
``wall - cpu - run-queue wait`` is then the time a thread was *blocked* (on the GIL, a
lock, a barrier that sleeps), which separates "held up" from "the machine is busy with
other processes". fastprop's tests and benchmarks measure threads with this module;
elsewhere than Linux the run-queue wait reads as 0 and only the calling thread is seen.
"""

import os
import time

__all__ = ["thread_times", "task_cpu_times"]


def thread_times():
    """(CPU seconds, run-queue wait seconds) of the calling thread so far."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            cpu_ns, wait_ns = f.read().split()[:2]
        return int(cpu_ns) / 1e9, int(wait_ns) / 1e9
    except (OSError, ValueError):
        return time.thread_time(), 0.0


def task_cpu_times():
    """{thread id: CPU seconds so far} for every thread of this process (Linux; an
    empty dict elsewhere). Threads that start or end between two calls appear in one."""
    out = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                out[int(tid)] = int(f.read().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):
            continue  # the thread ended meanwhile
    return out
