/* fastprop's OpenMP team helpers: team size and rank, the barrier, a stop flag, and
 * the guard that keeps a forked child from waiting on threads it does not have.
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

#ifdef _OPENMP
static int fp_has_openmp(void) { return 1; }
/* Threads a parallel region started now from this thread would use. */
static int fp_omp_max_threads(void) {
    return fp_team_usable() ? omp_get_max_threads() : 1;
}
#define FP_BARRIER() _Pragma("omp barrier")
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
#define FP_BARRIER()
static int fp_team_size(void) { return 1; }
static int fp_thread_id(void) { return 0; }
static int fp_flag_get(int *p) { return *p; }
static void fp_flag_set(int *p) { *p = 1; }
#endif

#endif
