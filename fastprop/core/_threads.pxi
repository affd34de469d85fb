# The team from Cython: the build's flags, the governor's and the budget's settings
# (csrc/fp_team.h), the signal checks, and the steps every team member takes between
# minibatches.

# Check for Ctrl-C (and other signals) every this many minibatches. Only a call from
# the main thread checks: Python runs signal handlers there alone, and taking the GIL
# back from a worker thread would make a background fit wait on whatever Python code
# the other threads run (tests/test_scaleout.py checks that it does not).
cdef Py_ssize_t SIGNAL_CHECK_EVERY = 8


import threading as _threading


cdef Py_ssize_t _signal_interval():
    return SIGNAL_CHECK_EVERY if _threading.current_thread() is _threading.main_thread() else 0


HAS_OPENMP = bool(fp_has_openmp())


# True where the team's barriers are fastprop's own (brief spin, then a futex sleep),
# False where they are OpenMP's (csrc/fp_team.h).
OWN_BARRIER = bool(FP_OWN_BARRIER)


# True where a team whose members wait too long at its barriers (another process busy
# on a core) goes on with thread 0 alone (csrc/fp_team.h, "foreign load").
TEAM_GOVERNOR = bool(FP_GOV)


def _set_team_governor(on=None, idle=None, window=None, probe=None, solo=None,
                       solo_max=None):
    """Turn the team's governor on or off and set its thresholds (for benchmarks and
    tests; times in seconds; None keeps a setting), forgetting a solo period carried
    from an earlier pass. Returns the old settings, to pass back. Call it between
    passes."""
    global fp_gov_enabled, fp_gov_idle, fp_gov_window_ns, fp_gov_probe_ns
    global fp_gov_solo_ns, fp_gov_solo_max_ns
    old = dict(on=fp_gov_enabled != 0, idle=fp_gov_idle, window=fp_gov_window_ns / 1e9,
               probe=fp_gov_probe_ns / 1e9, solo=fp_gov_solo_ns / 1e9,
               solo_max=fp_gov_solo_max_ns / 1e9)
    if FP_GOV:
        if on is not None:
            fp_gov_enabled = 1 if on else 0
        if idle is not None:
            fp_gov_idle = idle
        if window is not None:
            fp_gov_window_ns = <long long> (window * 1e9)
        if probe is not None:
            fp_gov_probe_ns = <long long> (probe * 1e9)
        if solo is not None:
            fp_gov_solo_ns = <long long> (solo * 1e9)
        if solo_max is not None:
            fp_gov_solo_max_ns = <long long> (solo_max * 1e9)
    fp_gov_forget()
    return old


def _team_governor_stats():
    """(solo periods entered for waiting, passes started alone, solo periods entered to
    leave the cores to other passes) since the module loaded."""
    return int(fp_gov_solo_total), int(fp_gov_solo_starts), int(fp_gov_budget_total)


def _team_working():
    """Pool threads working now (in a team pass, not resting while thread 0 is alone)."""
    return fp_team_working_now()


def _set_budget(int passes, int threads, int cores):
    """The training passes running in the process, the threads they may use between
    them and the cores (kept by fastprop/core/_team.py; a team pass re-checks its share
    every minibatch)."""
    fp_budget_set(passes, threads, cores)


# True where a team's threads are fastprop's own pool (csrc/fp_team.h, "pool"), which
# sleep between passes; False where they are OpenMP's.
OWN_POOL = bool(FP_POOL)


def _pool_threads():
    """Threads the pool has started (a team of n uses n - 1 of them and its caller)."""
    return int(fp_pool_threads())


def openmp_max_threads():
    """Threads an OpenMP parallel region started now from this thread would use (1
    without OpenMP, and 1 in a forked child's copy of a thread that ran a team)."""
    return fp_omp_max_threads()


def team_usable():
    """False in a forked child's copy of a thread that had started an OpenMP team
    before the fork: its passes then run on that thread alone (csrc/fp_team.h)."""
    return bool(fp_team_usable())


if fp_team_init() != 0 or fp_pool_init() != 0:
    raise ImportError("fastprop: pthread_atfork failed to register the fork guard")


cdef bint _team_interrupted(int tid, int nt, Py_ssize_t b, Py_ssize_t signal_every,
                            SplitShared* sh) noexcept nogil:
    """After minibatch b (from 1), every ``signal_every``: thread 0 checks for signals
    (it is the caller's thread), and the whole team learns at a barrier whether a signal
    handler raised (KeyboardInterrupt), so that all stop between the same minibatches.
    Every member must call it at the same minibatches."""
    cdef int rc
    if signal_every <= 0 or b % signal_every != 0:
        return False
    if tid == 0:
        with gil:
            rc = _check_signals()
        sh.stop = rc != 0
    fp_team_barrier(&sh.team, tid, nt)
    return sh.stop != 0


cdef inline bint _team_next(int tid, int* nt, int* seen, Py_ssize_t* start,
                            Py_ssize_t* b, Py_ssize_t* t, double* sq,
                            SplitShared* sh) noexcept nogil:
    """Between minibatches: who works on the next one. A member that thread 0 left
    behind sleeps until woken (then takes thread 0's loop state) or until the pass ends,
    or leaves at once when other fits need its core (returns True: leave the loop). Thread 0 alone wakes the team when its solo period
    is over. Results do not depend on it: the parts are the same for any team."""
    if nt[0] > 1:
        if fp_team_gen(&sh.team) == seen[0]:
            return False
        if tid == 0:
            nt[0] = 1
            return False
        if fp_team_quit(&sh.team) or fp_team_rest(&sh.team, seen) == FP_MODE_DONE:
            return True
        start[0] = sh.start
        b[0] = sh.b
        t[0] = sh.t
        sq[0] = sh.sq_now
        return False
    if tid == 0 and sh.team.n > 1 and fp_team_govern(&sh.team, 1) == FP_MODE_TEAM:
        sh.start = start[0]
        sh.b = b[0]
        sh.t = t[0]
        sh.sq_now = sq[0]
        fp_team_rejoin(&sh.team)
        seen[0] = fp_team_gen(&sh.team)
        nt[0] = sh.team.n
    return False


cdef inline void _team_last_barrier(int tid, int nt, SplitShared* sh) noexcept nogil:
    """The last barrier of a minibatch; thread 0 first decides whether it goes on alone."""
    if tid == 0:
        fp_team_govern(&sh.team, nt)
    fp_team_barrier(&sh.team, tid, nt)
