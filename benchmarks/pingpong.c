/* How long one cache line takes to go from CPU 0 to CPU 1 and back, printed once a
 * second: on a virtual machine the host may move its virtual CPUs closer together or
 * further apart while a benchmark runs, and every barrier and every line that two
 * threads share pays that round trip (benchmarks/README.md, "Cores that move apart").
 *
 *   cc -O2 -pthread benchmarks/pingpong.c -o /tmp/pingpong && /tmp/pingpong 40
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static _Atomic long flag __attribute__((aligned(64)));
static _Atomic int stop;

static void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* CPU 1: answers every odd value with the next even one */
static void *pong(void *arg) {
    (void)arg;
    pin(1);
    for (long v = 1; !atomic_load(&stop); v += 2) {
        while (atomic_load_explicit(&flag, memory_order_acquire) != v && !atomic_load(&stop))
            ;
        atomic_store_explicit(&flag, v + 1, memory_order_release);
    }
    return NULL;
}

int main(int argc, char **argv) {
    int seconds = argc > 1 ? atoi(argv[1]) : 30;
    pthread_t t;
    pin(0);
    pthread_create(&t, NULL, pong, NULL);
    long v = 0;
    for (int s = 0; s < seconds; s++) {
        double t0 = now();
        long n = 0;
        while (now() - t0 < 1.0) {
            for (int i = 0; i < 1000; i++, v += 2) {
                atomic_store_explicit(&flag, v + 1, memory_order_release);
                while (atomic_load_explicit(&flag, memory_order_acquire) != v + 2)
                    ;
            }
            n += 1000;
        }
        printf("%.0f ", (now() - t0) / n * 1e9); /* ns per round trip */
        fflush(stdout);
    }
    printf("\n");
    atomic_store(&stop, 1);
    pthread_join(t, NULL);
    return 0;
}
