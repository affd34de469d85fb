/* fastprop's team: the pool of threads that runs an epoch's team pass, its barrier and
 * the governor that lets thread 0 go on alone beside a busy process; OpenMP's team size
 * and rank, a stop flag, and the guard that keeps a forked child from waiting on
 * OpenMP threads it does not have (the L-BFGS block pass and big elementwise loops).
 *
 * Design (fork). GNU OpenMP keeps a pool of worker threads for each thread that has
 * started a team. fork() copies the pool's bookkeeping into the child but not its
 * threads, so a team of two or more started in the child from the forking thread waits
 * forever for workers that do not exist (a team of one never touches the pool). A
 * thread that starts a team of two or more marks itself (thread-local); an at-fork
 * handler marks the child's copy of such a thread as unable to start teams, and every
 * team size goes through fp_team_threads(), which gives that thread a team of one.
 * The result does not change: no partition depends on the team size. Threads that the
 * child starts later have no pool yet and get teams as usual. LLVM's OpenMP rebuilds
 * its pool after fork; the guard is then merely cautious. */
#ifndef FASTPROP_FP_TEAM_H
#define FASTPROP_FP_TEAM_H

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(_OPENMP) && !defined(_WIN32)
#include <pthread.h>
#define FP_TEAM_FORK_GUARD 1
static _Thread_local int fp_team_started = 0;   /* this thread has run a team of 2+ */
static _Thread_local int fp_team_unusable = 0;  /* ...and fork() left its pool behind */

static void fp_team_atfork_child(void) {
    if (fp_team_started)
        fp_team_unusable = 1;
}

/* Called once when the module loads; 0 on success. */
static int fp_team_init(void) {
    return pthread_atfork(NULL, NULL, fp_team_atfork_child);
}

/* 1 while the calling thread may start a team of two or more. */
static int fp_team_usable(void) { return !fp_team_unusable; }

/* The team size to start from the calling thread for a request of n: n, or 1 where
 * fork() made the thread's pool unusable. Call it right before the parallel region. */
static int fp_team_threads(int n) {
    if (n <= 1)
        return 1;
    if (fp_team_unusable)
        return 1;
    fp_team_started = 1;
    return n;
}
#else
#define FP_TEAM_FORK_GUARD 0
static int fp_team_init(void) { return 0; }
static int fp_team_usable(void) { return 1; }
static int fp_team_threads(int n) { return n > 1 ? n : 1; }
#endif

/* Design (waiting). A team meets at barriers several times per minibatch. OpenMP's
 * barrier spins for a long while (GNU's default: 300k rounds) before it sleeps, which is
 * right on an idle machine and wrong beside any other process: when the partner has been
 * descheduled, the waiting thread burns the core the partner needs, and epochs took
 * 1.4-26x longer than on one thread (benchmarks/README.md). fp_barrier_wait spins only
 * briefly (FP_BARRIER_SPIN rounds, some microseconds: the usual gap between balanced
 * halves) and then sleeps on a futex until the last thread arrives and wakes it, as
 * OMP_WAIT_POLICY=passive would, but for fastprop's own barriers only and without an
 * environment variable read when the runtime loads. Elsewhere than Linux the sleep is
 * sched_yield; without GCC-style atomics the OpenMP barrier is used. */
#if defined(_OPENMP) && (defined(__GNUC__) || defined(__clang__))
#define FP_OWN_BARRIER 1
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#else
#include <sched.h>
#endif
#ifndef FP_BARRIER_SPIN
#define FP_BARRIER_SPIN 4000
#endif

typedef struct {
    int arrived;    /* threads at the barrier in this round */
    int phase;      /* rounds completed; a waiter leaves when it changes */
} fp_barrier;

static inline void fp_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void fp_barrier_init(fp_barrier *b) { b->arrived = 0; b->phase = 0; }

/* Every one of the team's n threads calls it; all leave once all have arrived, with
 * what each wrote before arriving visible to all (acquire/release on phase). */
static void fp_barrier_wait(fp_barrier *b, int n) {
    if (n <= 1)
        return;
    int phase = __atomic_load_n(&b->phase, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&b->arrived, 1, __ATOMIC_ACQ_REL) == n) {
        __atomic_store_n(&b->arrived, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&b->phase, phase + 1, __ATOMIC_RELEASE);
#ifdef __linux__
        syscall(SYS_futex, &b->phase, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
#endif
        return;
    }
    for (int i = 0; i < FP_BARRIER_SPIN; i++) {
        if (__atomic_load_n(&b->phase, __ATOMIC_ACQUIRE) != phase)
            return;
        fp_cpu_relax();
    }
    while (__atomic_load_n(&b->phase, __ATOMIC_ACQUIRE) == phase) {
#ifdef __linux__
        syscall(SYS_futex, &b->phase, FUTEX_WAIT_PRIVATE, phase, NULL, NULL, 0);
#else
        sched_yield();
#endif
    }
}

/* Design (foreign load). A barrier waits for the slowest member. When another process
 * takes a core, a member is descheduled for whole time slices and the team runs slower
 * than one thread would. Every partition is fixed by the shapes, not by the team, so
 * thread 0 may run all parts alone from any minibatch on and the model is unchanged.
 * The governor below decides that: the members time their barrier waits, and thread 0,
 * before the last barrier of a minibatch, looks at the latest window (at least 1 ms
 * and two minibatches; 0.25 ms after waking the team). When the team spent more than
 * fp_gov_idle of its time waiting, thread 0 goes on alone ("solo") and the others
 * sleep on a futex.
 * After a solo period thread 0 wakes them to try the team again; the period doubles
 * after each try that fails (fp_gov_solo_ns up to fp_gov_solo_max_ns) and starts over
 * once the team keeps up. The period carries over to the next pass, which then starts
 * on one thread until it ends, so that short passes (a partial_fit epoch) do not pay
 * for a team's window each time. On a quiet machine a balanced team waits a few per
 * cent of its time and never goes solo. */
#include <time.h>
#define FP_GOV 1
#define FP_TEAM_MAX 64
/* The governor's settings (tests change them through _kernels._set_team_governor). */
static long long fp_gov_window_ns = 1000000LL;     /* a pass's first window: 1 ms */
static long long fp_gov_probe_ns = 250000LL;       /* a window after waking the team */
static double fp_gov_idle = 0.35;                  /* share of the team's time waiting */
static long long fp_gov_solo_ns = 8000000LL;       /* the first solo period: 8 ms */
static long long fp_gov_solo_max_ns = 256000000LL; /* the longest: 256 ms */
enum { FP_MODE_TEAM = 0, FP_MODE_SOLO = 1, FP_MODE_DONE = 2 };

typedef struct { long long ns; char pad[56]; } fp_wait_slot;

typedef struct {
    fp_barrier bar;
    int gen;                        /* thread 0's changes of who works: odd while it
                                       works alone (the others sleep on it: a futex) */
    int done;                       /* thread 0 has left the loop */
    int n;                          /* threads in the team */
    fp_wait_slot wait[FP_TEAM_MAX]; /* per member: ns spent waiting at barriers */
    /* thread 0's bookkeeping */
    long long win_start, win_wait;  /* the window: when it began, waits until then */
    long long win_ns;               /* its shortest length */
    int win_batches;
    long long solo_until, solo_len; /* the solo period: its end, its length */
    int solo_budget;                /* the solo period is for other passes' share */
    int quit;                       /* ...and the other members left the pass for good */
    int solo_periods;               /* solo periods entered in this pass */
} fp_team;

/* The solo period of the last pass that ended alone: the next pass starts alone until
 * it ends (0: start as a team). Shared by the process: the team goes to one pass at a
 * time (fastprop/core/_team.py). */
static long long fp_gov_solo_until = 0, fp_gov_solo_len = 0;  /* 0: fp_gov_solo_ns */

static long long fp_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* 0 turns the governor off (benchmarks compare the team with and without it). */
static int fp_gov_enabled = 1;
/* For tests and benchmarks: solo periods entered, passes started alone by a carried period. */
static long long fp_gov_solo_total = 0, fp_gov_solo_starts = 0;

/* Design (budget). Fits running side by side in threads share the cores: every fit
 * runs on its calling thread, and a team takes extra threads only from the cores that
 * the other fits leave free. fastprop/core/_team.py counts the threads that are
 * training (fp_budget_passes) and the threads the process may use (fp_budget_cores: its
 * cores, or an explicit OMP_NUM_THREADS / threadpool_limits, which may exceed them;
 * fp_budget_machine: the cores alone); a team re-checks
 * its share before the last barrier of every minibatch, and when other fits need the
 * cores its members leave the pass and thread 0 finishes the epoch alone (the next
 * epoch takes the share there is then). A fit that starts waits for that
 * (fp_team_working), so k fits on P cores run at most max(P, k) threads. */
static int fp_budget_passes = 0, fp_budget_cores = 1, fp_budget_machine = 1;
static long long fp_gov_budget_total = 0;   /* solo periods entered for the budget */
/* Team threads working now besides the teams' threads 0 (+(n-1) as a team starts; each
 * member -1 when it returns, and -1 / +1 around its sleep while thread 0 is alone): a
 * fit that starts waits until they and the training threads fit in the cores
 * (fastprop/core/_team.py), rather than oversubscribe them for the minibatch a team
 * takes to give a thread back. */
static int fp_team_working = 0;
/* A fit that starts publishes the passes (fp_budget_set) and then reads the working
 * threads; a team that starts adds its members to them and then reads the passes
 * (fp_pool_run). Both sequentially consistent: at least one of the two sees the other,
 * so either the fit waits or the team starts smaller. */
static int fp_team_working_now(void) { return __atomic_load_n(&fp_team_working, __ATOMIC_SEQ_CST); }
static void fp_team_working_add(int k) { __atomic_add_fetch(&fp_team_working, k, __ATOMIC_SEQ_CST); }

static void fp_budget_set(int passes, int threads, int cores) {
    __atomic_store_n(&fp_budget_cores, threads > 1 ? threads : 1, __ATOMIC_SEQ_CST);
    __atomic_store_n(&fp_budget_machine, cores > 1 ? cores : 1, __ATOMIC_SEQ_CST);
    __atomic_store_n(&fp_budget_passes, passes, __ATOMIC_SEQ_CST);
}

/* Threads a team may use now: the cores the other passes leave free, at least 1. */
static int fp_budget_share(void) {
    int others = __atomic_load_n(&fp_budget_passes, __ATOMIC_SEQ_CST) - 1;
    int share = __atomic_load_n(&fp_budget_cores, __ATOMIC_SEQ_CST) - (others > 0 ? others : 0);
    return share > 1 ? share : 1;
}

/* Forget a carried solo period (tests and benchmarks, between passes). */
static void fp_gov_forget(void) {
    __atomic_store_n(&fp_gov_solo_until, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&fp_gov_solo_len, 0, __ATOMIC_RELAXED);
}

/* 1 once the members are to leave the pass (read after gen changed). */
static int fp_team_quit(fp_team *tm) { return __atomic_load_n(&tm->quit, __ATOMIC_RELAXED); }

/* Who works now: members compare it with the value they last saw. */
static int fp_team_gen(fp_team *tm) { return __atomic_load_n(&tm->gen, __ATOMIC_ACQUIRE); }

/* Before the parallel region: the team size to start for a request of n (1 while the
 * solo period of an earlier pass lasts), and the team's state. */
static int fp_team_begin(fp_team *tm, int n) {
    long long now = fp_now_ns(), until = __atomic_load_n(&fp_gov_solo_until, __ATOMIC_RELAXED);
    fp_barrier_init(&tm->bar);
    tm->gen = 0;
    tm->done = 0;
    for (int i = 0; i < FP_TEAM_MAX; i++)
        tm->wait[i].ns = 0;
    tm->win_start = now;
    tm->win_wait = 0;
    tm->win_batches = 0;
    tm->solo_until = 0;
    tm->solo_budget = 0;
    tm->quit = 0;
    tm->solo_len = __atomic_load_n(&fp_gov_solo_len, __ATOMIC_RELAXED);
    if (tm->solo_len <= 0)
        tm->solo_len = fp_gov_solo_ns;
    tm->win_ns = fp_gov_window_ns;
    tm->solo_periods = 0;
    if (n > 1 && until > now && fp_gov_enabled) {
        n = 1;
        __atomic_add_fetch(&fp_gov_solo_starts, 1, __ATOMIC_RELAXED);
    }
    tm->n = n > FP_TEAM_MAX ? FP_TEAM_MAX : n;
    return tm->n;
}

/* Thread 0 as its team of nt starts working. */
static void fp_team_open(fp_team *tm, int nt) { tm->n = nt; }

/* A barrier of the nt members now working, timed for the governor. */
static void fp_team_barrier(fp_team *tm, int tid, int nt) {
    if (nt <= 1)
        return;
    long long t0 = fp_now_ns();
    fp_barrier_wait(&tm->bar, nt);
    __atomic_store_n(&tm->wait[tid].ns, tm->wait[tid].ns + fp_now_ns() - t0, __ATOMIC_RELAXED);
}

/* Thread 0, working with nt members, before the last barrier of a minibatch: the mode
 * for the next minibatch. Going solo is published here (gen becomes odd), so that the
 * others see it after that barrier; going back to the team (from nt == 1) is for
 * fp_team_rejoin. */
static int fp_team_govern(fp_team *tm, int nt) {
    long long now = fp_now_ns();
    if (tm->n <= 1)
        return FP_MODE_TEAM;
    if (nt <= 1)
        return !tm->quit && now >= tm->solo_until ? FP_MODE_TEAM : FP_MODE_SOLO;
    if (nt > fp_budget_share()) {
        /* other fits started: leave them the cores for the rest of the pass (the members
         * return from it, rather than sleep in it and wake at its end; the next pass
         * takes the share there is then) */
        tm->solo_until = now;
        tm->solo_budget = 1;
        __atomic_store_n(&tm->quit, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&fp_gov_budget_total, 1, __ATOMIC_RELAXED);
        __atomic_store_n(&tm->gen, tm->gen + 1, __ATOMIC_RELEASE);
        return FP_MODE_SOLO;
    }
    /* a team larger than the cores (an explicit OMP_NUM_THREADS above them) waits for
     * its own descheduled members: the user asked for that, it is not foreign load */
    if (!fp_gov_enabled || nt > __atomic_load_n(&fp_budget_machine, __ATOMIC_RELAXED))
        return FP_MODE_TEAM;
    tm->win_batches++;
    long long span = now - tm->win_start;
    if (tm->win_batches < 2 || span < tm->win_ns)
        return FP_MODE_TEAM;
    long long waited = 0;
    for (int i = 0; i < nt; i++)
        waited += __atomic_load_n(&tm->wait[i].ns, __ATOMIC_RELAXED);
    double idle = (double)(waited - tm->win_wait) / ((double)span * nt);
    tm->win_start = now;
    tm->win_wait = waited;
    tm->win_batches = 0;
    if (idle <= fp_gov_idle) {
        tm->solo_len = fp_gov_solo_ns;   /* the team keeps up: forget the backoff */
        tm->win_ns = fp_gov_window_ns;
        return FP_MODE_TEAM;
    }
    tm->solo_until = now + tm->solo_len;
    tm->solo_budget = 0;
    tm->solo_periods++;
    __atomic_add_fetch(&fp_gov_solo_total, 1, __ATOMIC_RELAXED);
    __atomic_store_n(&tm->gen, tm->gen + 1, __ATOMIC_RELEASE);
    return FP_MODE_SOLO;
}

/* Thread 0, alone between minibatches, once its loop state is where the others will
 * read it: wake them to work as a team again. */
static void fp_team_rejoin(fp_team *tm) {
    long long now = fp_now_ns();
    if (!tm->solo_budget)  /* a retry: the next solo period, if it fails, is longer */
        tm->solo_len = tm->solo_len * 2 < fp_gov_solo_max_ns ? tm->solo_len * 2 : fp_gov_solo_max_ns;
    tm->solo_budget = 0;
    tm->win_start = now;
    tm->win_ns = fp_gov_probe_ns;
    tm->win_batches = 0;
    tm->win_wait = 0;
    for (int i = 0; i < tm->n; i++)
        tm->win_wait += __atomic_load_n(&tm->wait[i].ns, __ATOMIC_RELAXED);
    __atomic_store_n(&tm->gen, tm->gen + 1, __ATOMIC_RELEASE);
#ifdef __linux__
    syscall(SYS_futex, &tm->gen, FUTEX_WAKE_PRIVATE, FP_TEAM_MAX, NULL, NULL, 0);
#endif
}

/* A member other than thread 0, after the last barrier of a minibatch at which gen
 * was no longer the value it last saw (*seen): thread 0 went on alone. Sleep until it
 * wakes the team again (FP_MODE_TEAM, *seen updated: take the loop state it left and go
 * on; it may have done so before this member got here) or ends the pass (FP_MODE_DONE:
 * leave). */
static int fp_team_rest(fp_team *tm, int *seen) {
    for (;;) {
        int g = __atomic_load_n(&tm->gen, __ATOMIC_ACQUIRE);
        if (__atomic_load_n(&tm->done, __ATOMIC_ACQUIRE))
            return FP_MODE_DONE;
        if ((g & 1) == 0) {
            *seen = g;
            return FP_MODE_TEAM;
        }
        fp_team_working_add(-1);
#ifdef __linux__
        syscall(SYS_futex, &tm->gen, FUTEX_WAIT_PRIVATE, g, NULL, NULL, 0);
#else
        sched_yield();
#endif
        fp_team_working_add(1);
    }
}

/* Thread 0 when its loop ends: release sleeping members, and pass a solo period that is
 * still running on to the next pass. */
static void fp_team_end(fp_team *tm, int nt) {
    if (tm->n <= 1)
        return;
    if (fp_gov_enabled) {
        __atomic_store_n(&fp_gov_solo_len, tm->solo_len, __ATOMIC_RELAXED);
        __atomic_store_n(&fp_gov_solo_until, nt <= 1 && !tm->solo_budget ? tm->solo_until : 0,
                         __ATOMIC_RELAXED);
    }
    __atomic_store_n(&tm->done, 1, __ATOMIC_RELEASE);
    __atomic_store_n(&tm->gen, tm->gen + 2, __ATOMIC_RELEASE);
#ifdef __linux__
    syscall(SYS_futex, &tm->gen, FUTEX_WAKE_PRIVATE, FP_TEAM_MAX, NULL, NULL, 0);
#endif
}
#else
#define FP_OWN_BARRIER 0
typedef struct { int unused; } fp_barrier;
static void fp_barrier_init(fp_barrier *b) { b->unused = 0; }
#ifdef _OPENMP
static void fp_barrier_wait(fp_barrier *b, int n) { (void)b; (void)n; _Pragma("omp barrier") }
#else
static void fp_barrier_wait(fp_barrier *b, int n) { (void)b; (void)n; }
#endif

/* Without fastprop's own barrier the team never goes solo (see above). */
#define FP_GOV 0
#define FP_TEAM_MAX 64
enum { FP_MODE_TEAM = 0, FP_MODE_SOLO = 1, FP_MODE_DONE = 2 };
typedef struct { fp_barrier bar; int gen; int n; int solo_periods; } fp_team;
static int fp_team_begin(fp_team *tm, int n) {
    fp_barrier_init(&tm->bar); tm->gen = 0; tm->solo_periods = 0;
    tm->n = n; return n;
}
static void fp_team_barrier(fp_team *tm, int tid, int nt) { (void)tid; fp_barrier_wait(&tm->bar, nt); }
static int fp_team_govern(fp_team *tm, int nt) { (void)tm; (void)nt; return FP_MODE_TEAM; }
static void fp_team_rejoin(fp_team *tm) { (void)tm; }
static int fp_team_rest(fp_team *tm, int *seen) { (void)tm; (void)seen; return FP_MODE_DONE; }
static void fp_team_end(fp_team *tm, int nt) { (void)tm; (void)nt; }
static int fp_team_gen(fp_team *tm) { return tm->gen; }
static int fp_team_quit(fp_team *tm) { (void)tm; return 0; }
static int fp_gov_enabled = 0;
static long long fp_gov_solo_total = 0, fp_gov_solo_starts = 0;
static int fp_budget_passes = 0, fp_budget_cores = 1, fp_budget_machine = 1;
static long long fp_gov_budget_total = 0;
static int fp_team_working = 0;
static int fp_team_working_now(void) { return 0; }
static void fp_team_open(fp_team *tm, int nt) { tm->n = nt; }
static void fp_budget_set(int passes, int threads, int cores) {
    fp_budget_passes = passes; fp_budget_cores = threads; fp_budget_machine = cores;
}
static long long fp_gov_window_ns = 0, fp_gov_probe_ns = 0, fp_gov_solo_ns = 0, fp_gov_solo_max_ns = 0;
static double fp_gov_idle = 0.0;
static void fp_gov_forget(void) {}
#endif


#ifdef _OPENMP
static int fp_has_openmp(void) { return 1; }
/* Threads a parallel region started now from this thread would use. */
static int fp_omp_max_threads(void) {
    return fp_team_usable() ? omp_get_max_threads() : 1;
}
static int fp_team_size(void) { return omp_get_num_threads(); }
static int fp_thread_id(void) { return omp_get_thread_num(); }
/* A flag one member sets and the others poll (atomic, so the poll sees the store). */
static int fp_flag_get(int *p) {
    int v;
#pragma omp atomic read
    v = *p;
    return v;
}
static void fp_flag_set(int *p) {
#pragma omp atomic write
    *p = 1;
}
#else
static int fp_has_openmp(void) { return 0; }
static int fp_omp_max_threads(void) { return 1; }
static int fp_team_size(void) { return 1; }
static int fp_thread_id(void) { return 0; }
static int fp_flag_get(int *p) { return *p; }
static void fp_flag_set(int *p) { *p = 1; }
#endif


/* ---------------------------------------------------------------------------------
 * The team's threads.
 *
 * Design (pool). A pass runs fn(arg, tid, nt) on nt threads: the caller is tid 0 and
 * the others come from fastprop's own pool, threads that sleep on a futex between
 * passes. They were OpenMP's, whose idle threads spin for milliseconds after every
 * parallel region (GNU's default: 300k pause rounds) unless OMP_WAIT_POLICY says
 * otherwise when the runtime loads; beside another process that spin took the core
 * the caller needed, after every epoch. A pool thread spins briefly only while it
 * waits for the caller at the end of a pass. One pass uses the pool at a time; a pass
 * that finds it busy runs on its caller alone (the same result: no partition depends
 * on the team). fork() leaves the pool's threads behind: the child starts a new pool.
 * Without Linux futexes and GCC atomics, OpenMP's parallel region runs the team. */
typedef void (*fp_task_fn)(void *arg, int tid, int nt);

#if FP_OWN_BARRIER && defined(__linux__)
#include <pthread.h>
#include <signal.h>
#define FP_POOL 1

/* Each pool thread sleeps on a futex of its own, so that a pass wakes only the threads
 * it uses: a thread woken only to go back to sleep would still be runnable, waiting for
 * a core, for up to a time slice on a busy machine. */
typedef struct { int job; char pad[60]; } fp_pool_slot;

static struct {
    int busy;                          /* a pass holds the pool */
    int n_started;                     /* threads started: tids 1 .. n_started */
    int left;                          /* futex: members still in this pass's fn */
    fp_task_fn fn;
    void *arg;
    int nt;
    fp_pool_slot slot[FP_TEAM_MAX];    /* per thread, a futex: bumped for each pass it
                                          works in */
} fp_pool;

static void fp_futex_wait(int *word, int value) {
    syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, value, NULL, NULL, 0);
}

static void fp_futex_wake_all(int *word) {
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 0x7fffffff, NULL, NULL, 0);
}

static void *fp_pool_thread(void *p) {
    int tid = (int)(long)p, seen = 0;
    for (;;) {
        int job;
        int *word = &fp_pool.slot[tid].job;
        while ((job = __atomic_load_n(word, __ATOMIC_ACQUIRE)) == seen)
            fp_futex_wait(word, seen);
        seen = job;
        if (tid < fp_pool.nt) {
            fp_pool.fn(fp_pool.arg, tid, fp_pool.nt);
            fp_team_working_add(-1);
            if (__atomic_sub_fetch(&fp_pool.left, 1, __ATOMIC_ACQ_REL) == 0)
                fp_futex_wake_all(&fp_pool.left);
        }
    }
    return NULL;
}

/* Start pool threads up to tid n - 1; the team size that can run (fewer if the system
 * refuses a thread). Pool threads block every signal: Python handles them on the main
 * thread. */
static int fp_pool_grow(int n) {
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    while (fp_pool.n_started < n - 1) {
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&th, &attr, fp_pool_thread, (void *)(long)(fp_pool.n_started + 1));
        pthread_attr_destroy(&attr);
        if (rc != 0)
            break;
        fp_pool.n_started++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return fp_pool.n_started + 1 < n ? fp_pool.n_started + 1 : n;
}

static void fp_pool_atfork_child(void) {
    /* the pool's threads are not in the child, nor is a pass of another thread */
    fp_pool.busy = 0;
    fp_pool.n_started = 0;
    for (int t = 0; t < FP_TEAM_MAX; t++)
        fp_pool.slot[t].job = 0;
    fp_pool.left = 0;
}

/* Run fn(arg, tid, nt) on a team of up to n threads, the caller being tid 0; returns
 * nt. Returns when every member has returned. */
static int fp_pool_run(fp_task_fn fn, void *arg, int n) {
    if (n > FP_TEAM_MAX)
        n = FP_TEAM_MAX;
    if (n <= 1 || __atomic_exchange_n(&fp_pool.busy, 1, __ATOMIC_ACQUIRE)) {
        fn(arg, 0, 1);
        return 1;
    }
    n = fp_pool_grow(n);
    /* count the members as working, then take no more than the budget's share: a fit
     * that started since the caller chose n either sees them and waits, or is seen here
     * (fp_team_working_now) */
    fp_team_working_add(n - 1);
    int share = fp_budget_share();
    if (n > share) {
        fp_team_working_add(share - n);
        n = share;
    }
    if (n > 1) {
        fp_pool.fn = fn;
        fp_pool.arg = arg;
        fp_pool.nt = n;
        __atomic_store_n(&fp_pool.left, n - 1, __ATOMIC_RELAXED);
        for (int t = 1; t < n; t++) {
            __atomic_add_fetch(&fp_pool.slot[t].job, 1, __ATOMIC_RELEASE);
            syscall(SYS_futex, &fp_pool.slot[t].job, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
        }
    }
    fn(arg, 0, n);
    if (n > 1) {
        int left, i = 0;
        while ((left = __atomic_load_n(&fp_pool.left, __ATOMIC_ACQUIRE)) != 0) {
            if (i++ < FP_BARRIER_SPIN)
                fp_cpu_relax();
            else
                fp_futex_wait(&fp_pool.left, left);
        }
    }
    __atomic_store_n(&fp_pool.busy, 0, __ATOMIC_RELEASE);
    return n;
}

static int fp_pool_init(void) { return pthread_atfork(NULL, NULL, fp_pool_atfork_child); }
static int fp_pool_threads(void) { return fp_pool.n_started; }
#else
#define FP_POOL 0
static int fp_pool_run(fp_task_fn fn, void *arg, int n) {
#ifdef _OPENMP
    int used = 1;
    n = fp_team_threads(n);
    if (n > 1) {
#pragma omp parallel num_threads(n)
        {
            int tid = omp_get_thread_num();
            if (tid == 0) {
                used = omp_get_num_threads();
#if FP_OWN_BARRIER
                fp_team_working_add(used - 1);
#endif
            }
            fn(arg, tid, omp_get_num_threads());
#if FP_OWN_BARRIER
            if (tid != 0)
                fp_team_working_add(-1);
#endif
        }
        return used;
    }
#endif
    fn(arg, 0, 1);
    return 1;
}
static int fp_pool_init(void) { return 0; }
static int fp_pool_threads(void) { return 0; }
#endif

#endif
