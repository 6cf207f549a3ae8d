/*
 * What one cross-thread wake-up costs on this machine: a thread sleeps in
 * futex_wait on CPU 1 while another, on CPU 0, busy-waits GAP microseconds
 * (long enough for CPU 1 to go idle; on a VM the idle vCPU halts) and then
 * wakes it. Prints the wake-up latency (wake call to the sleeper running) and
 * the time the waker spends in the futex_wake system call. Every hand-off of
 * a call between threads (tokio runtime to runtime, HTTP worker to the
 * writer thread, and back) pays this once.
 *
 *   cc -O2 -pthread -o /tmp/wake-latency scripts/bench/wake-latency.c
 *   /tmp/wake-latency [GAP_US=300] [ROUNDS=2000]
 */
#define _GNU_SOURCE
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static atomic_int flag;
static atomic_int done;
static _Atomic double woke_at;
static int rounds = 2000;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static void pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static void *sleeper(void *arg) {
  (void)arg;
  pin(1);
  for (int i = 0; i < rounds; i++) {
    while (atomic_load(&flag) == 0)
      syscall(SYS_futex, &flag, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
    woke_at = now();
    atomic_store(&flag, 0);
    atomic_store(&done, 1);
  }
  return NULL;
}

static int by_value(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  double gap = (argc > 1 ? atof(argv[1]) : 300) * 1e-6;
  if (argc > 2) rounds = atoi(argv[2]);
  if (gap < 0 || rounds < 10) {
    fprintf(stderr, "usage: wake-latency [GAP_US >= 0] [ROUNDS >= 10]\n");
    return 2;
  }
  pin(0);
  pthread_t thread;
  if (pthread_create(&thread, NULL, sleeper, NULL) != 0) return 1;
  double *latency = malloc(rounds * sizeof(double));
  double *syscall_cost = malloc(rounds * sizeof(double));
  if (!latency || !syscall_cost) return 1;
  for (int i = 0; i < rounds; i++) {
    double start = now();
    while (now() - start < gap) {
    }
    atomic_store(&done, 0);
    double t0 = now();
    atomic_store(&flag, 1);
    syscall(SYS_futex, &flag, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    double t1 = now();
    while (!atomic_load(&done)) {
    }
    latency[i] = woke_at - t0;
    syscall_cost[i] = t1 - t0;
  }
  pthread_join(thread, NULL);
  qsort(latency, rounds, sizeof(double), by_value);
  qsort(syscall_cost, rounds, sizeof(double), by_value);
  printf("gap %.0f us, %d rounds: wake-up latency p50 %.1f us, p90 %.1f us; "
         "futex_wake in the waker p50 %.1f us, p90 %.1f us\n",
         gap * 1e6, rounds, latency[rounds / 2] * 1e6, latency[rounds * 9 / 10] * 1e6,
         syscall_cost[rounds / 2] * 1e6, syscall_cost[rounds * 9 / 10] * 1e6);
  return 0;
}
