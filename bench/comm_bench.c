/*
 * bench/comm_bench.c: all_reduce throughput of Lunar's communicator
 * (lunar_comm_all_reduce on the world, core/comm/comm_mpi.c) against raw
 * MPI_Allreduce on MPI_COMM_WORLD, at the same sizes, in the same run.
 * Not a test. Built by `make bench-build` (build/bench/comm_bench, linked
 * against build/liblunar.a with mpicc); run by bench/scaling:
 *
 *   OMP_NUM_THREADS=1 mpirun -np 2 build/bench/comm_bench [samples=11] [max_mib=64]
 *
 * Both sides do the same thing: an in-place SUM of f32 (MPI_IN_PLACE; Lunar
 * adds its argument checks and a duplicated communicator). Each size is first
 * validated (rank r contributes r + 1; both must give size * (size + 1) / 2),
 * then timed: samples alternate Lunar and MPI (ABAB.., the order flipped
 * every sample) so drift on a shared machine hits both alike. A sample is a
 * barrier, then `iters` calls (more for small sizes, about 16 MiB moved per
 * sample), timed with MPI_Wtime; its time per call is the max over ranks.
 * The table shows medians: size, time per call, algorithm bandwidth
 * (bytes / time, GB/s = 1e9 B/s) for both, and the ratio Lunar / MPI of the
 * bandwidths (1 = parity, > 1 Lunar faster); "best ratio" is the same ratio
 * of the fastest samples, steadier than the median on a loaded machine.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lunar/comm.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* One sample: seconds per call, the max over ranks. */
static double sample(int lunar_side, lunar_comm *w, lunar_tensor *t, float *buf, int n, int iters) {
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    for (int i = 0; i < iters; i++) {
        if (lunar_side) {
            if (lunar_comm_all_reduce(w, t, LUNAR_SUM) != LUNAR_OK) {
                fprintf(stderr, "comm_bench: %s\n", lunar_last_error());
                MPI_Abort(MPI_COMM_WORLD, 1);
            }
        } else {
            MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        }
    }
    double dt = (MPI_Wtime() - t0) / iters, mx = dt;
    MPI_Allreduce(&dt, &mx, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return mx;
}

int main(int argc, char **argv) {
    int provided;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    int samples = argc > 1 ? atoi(argv[1]) : 11;
    long max_mib = argc > 2 ? atol(argv[2]) : 64;
    if (samples < 1) samples = 1;
    lunar_comm *w = lunar_comm_world();
    if (!w) {
        fprintf(stderr, "comm_bench: %s\n", lunar_last_error());
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    int rank = lunar_comm_rank(w), size = lunar_comm_size(w);
    if (rank == 0) {
        printf("all_reduce (f32 SUM, in place), %d ranks, %d samples per size, medians; "
               "GB/s = bytes / time (algbw)\n", size, samples);
        printf("%10s %12s %12s %12s %12s %8s %11s\n", "size", "Lunar us", "MPI us", "Lunar GB/s",
               "MPI GB/s", "ratio", "best ratio");
    }
    double *tl = calloc((size_t)samples, sizeof *tl), *tm = calloc((size_t)samples, sizeof *tm);
    int bad = 0;
    for (size_t bytes = 1024; bytes <= (size_t)max_mib << 20; bytes *= 4) {
        int n = (int)(bytes / sizeof(float));
        int64_t shape[1] = {n};
        lunar_tensor *t = lunar_tensor_new(LUNAR_F32, 1, shape, LUNAR_CPU);
        float *buf = malloc(bytes);
        if (!t || !buf) {
            fprintf(stderr, "comm_bench: out of memory at %zu bytes\n", bytes);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        float *p = lunar_tensor_data(t);
        /* validate both sides first */
        for (int i = 0; i < n; i++) p[i] = buf[i] = (float)(rank + 1);
        lunar_comm_all_reduce(w, t, LUNAR_SUM);
        MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        float want = (float)size * (float)(size + 1) / 2;
        for (int i = 0; i < n; i++)
            if (p[i] != want || buf[i] != want) {
                fprintf(stderr, "rank %d: wrong sum at %zu bytes [%d]: lunar %g mpi %g want %g\n", rank,
                        bytes, i, p[i], buf[i], want);
                bad = 1;
                break;
            }
        /* timing on zeros: the sums stay finite whatever the iteration count */
        memset(p, 0, bytes);
        memset(buf, 0, bytes);
        int iters = (int)((16u << 20) / bytes);
        if (iters < 1) iters = 1;
        if (iters > 2000) iters = 2000;
        sample(1, w, t, buf, n, iters);  /* warm-up, both */
        sample(0, w, t, buf, n, iters);
        for (int s = 0; s < samples; s++) {
            if (s % 2 == 0) {
                tl[s] = sample(1, w, t, buf, n, iters);
                tm[s] = sample(0, w, t, buf, n, iters);
            } else {
                tm[s] = sample(0, w, t, buf, n, iters);
                tl[s] = sample(1, w, t, buf, n, iters);
            }
        }
        double ml = median(tl, samples), mm = median(tm, samples);  /* sorts: [0] is the best */
        double bl = tl[0], bm = tm[0];
        if (rank == 0) {
            char sz[16];
            if (bytes >= 1u << 20) snprintf(sz, sizeof sz, "%zu MiB", bytes >> 20);
            else snprintf(sz, sizeof sz, "%zu KiB", bytes >> 10);
            printf("%10s %12.1f %12.1f %12.3f %12.3f %8.3f %11.3f\n", sz, ml * 1e6, mm * 1e6,
                   bytes / ml / 1e9, bytes / mm / 1e9, mm / ml, bm / bl);
        }
        lunar_tensor_free(t);
        free(buf);
    }
    int any = 0;
    MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (rank == 0 && any) printf("VALIDATION FAILED (see stderr)\n");
    free(tl);
    free(tm);
    MPI_Finalize();
    return any;
}
