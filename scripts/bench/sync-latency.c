/*
 * What one durable 4 KiB write costs on this machine's disk, by each way of
 * making it durable: the journal's O_DIRECT|O_DSYNC write, a buffered write
 * followed by fdatasync or fsync (what redb's durable commit does), and the
 * buffered O_DSYNC / RWF_DSYNC variants. The file is zero-filled and synced
 * first, so no write changes its size. A durable write through the store
 * server cannot take less than this plus one request round trip.
 *
 *   cc -O2 -o /tmp/sync-latency scripts/bench/sync-latency.c
 *   /tmp/sync-latency FILE [WRITES=2000]   (FILE on the disk under test; it is deleted)
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

enum { DIRECT_DSYNC, WRITE_FDATASYNC, WRITE_FSYNC, BUFFERED_DSYNC, RWF_DSYNC_WRITE, MODES };
static const char *names[MODES] = {
    "O_DIRECT|O_DSYNC", "write+fdatasync", "write+fsync", "O_DSYNC buffered", "RWF_DSYNC buffered",
};

static void prepare(const char *path) {
    unlink(path);
    int fd = open(path, O_CREAT | O_RDWR, 0644);
    if (fd < 0) { perror(path); exit(1); }
    char *zero = aligned_alloc(4096, 1 << 20);
    memset(zero, 0, 1 << 20);
    for (int i = 0; i < 64; i++)
        if (pwrite(fd, zero, 1 << 20, (off_t)i << 20) != 1 << 20) { perror("pwrite"); exit(1); }
    fsync(fd);
    close(fd);
    free(zero);
}

static void run(int mode, int writes, const char *path) {
    prepare(path);
    int flags = O_RDWR;
    if (mode == DIRECT_DSYNC) flags |= O_DIRECT | O_DSYNC;
    if (mode == BUFFERED_DSYNC) flags |= O_DSYNC;
    int fd = open(path, flags);
    if (fd < 0) { perror(path); exit(1); }
    char *buf = aligned_alloc(4096, 4096);
    memset(buf, 7, 4096);
    double *lat = malloc(sizeof(double) * writes);
    for (int i = 0; i < writes; i++) {
        off_t off = (off_t)(i % 16000) * 4096;
        double t = now_us();
        ssize_t n;
        if (mode == RWF_DSYNC_WRITE) {
            struct iovec v = {buf, 4096};
            n = pwritev2(fd, &v, 1, off, RWF_DSYNC);
        } else {
            n = pwrite(fd, buf, 4096, off);
        }
        if (n != 4096) { perror("write"); exit(1); }
        if (mode == WRITE_FDATASYNC && fdatasync(fd)) { perror("fdatasync"); exit(1); }
        if (mode == WRITE_FSYNC && fsync(fd)) { perror("fsync"); exit(1); }
        lat[i] = now_us() - t;
        /* Let the disk go idle between writes, as at concurrency 1. */
        usleep(200);
    }
    qsort(lat, writes, sizeof(double), cmp);
    printf("%-20s p50 %5.0f us  p90 %5.0f us  p99 %5.0f us\n", names[mode], lat[writes / 2],
           lat[writes * 9 / 10], lat[writes * 99 / 100]);
    close(fd);
    free(buf);
    free(lat);
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s FILE [WRITES]\n", argv[0]); return 2; }
    int writes = argc > 2 ? atoi(argv[2]) : 2000;
    if (writes < 100) writes = 100;
    for (int mode = 0; mode < MODES; mode++) run(mode, writes, argv[1]);
    unlink(argv[1]);
    return 0;
}
