/*
 * bench/kernels/attention_ab.c: the CPU attention kernels of two versions of
 * core/ops/cpu/attention.c side by side in one process (built by
 * bench/kernels/attention_ab.sh: the base version compiled with its public
 * names prefixed base_, linked beside the working tree's), timed alternately
 * call by call, so both see the same load of a shared machine. Not a test.
 *
 * Shapes: the main job's (B 128, N 50, H 3, D 64), ViT-S/16's (B 8, N 197,
 * H 6), the HybridViT's fused 400 and 784 tokens (B 1, H 12, D 64) and its ring
 * blocks at domain 2 and 224^2 (392 queries against 392 or 784 keys). Prints per
 * shape and kernel GFLOP/s base -> new (forward 4 B H Nq Nk D FLOPs, backward
 * 10 B H Nq Nk D: the scores again, dP, dQ, dK, dV), the best of REPEAT calls,
 * and the largest difference between the two versions' results.
 *
 * Time is the calling thread's CPU time by default (CLOCK_THREAD_CPUTIME_ID:
 * on a loaded host it leaves out the time the thread waits for a core, not the
 * cache misses other jobs cause); ATTN_AB_WALL=1 times wall clock (use it with
 * more than one thread, OMP_NUM_THREADS).
 *
 *   bash bench/kernels/attention_ab.sh [BASE_REV=HEAD] [REPEAT=9] [SHAPE index]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lunar/kernels.h"

void base_fwd(float *, float *, const float *, int, int, int, int);
void base_bwd(float *, const float *, const float *, const float *, const float *, int, int, int, int);
void base_fwd16(uint16_t *, float *, const uint16_t *, int, int, int, int);
void base_bwd16(uint16_t *, const uint16_t *, const uint16_t *, const uint16_t *, const float *, int, int, int, int);
void base_bfwd(float *, float *, const float *, const float *, int, int, int, int, int, int);
void base_bbwd(float *, float *, const float *, const float *, const float *, const float *, const float *, int, int,
               int, int, int);

static clockid_t clk = CLOCK_THREAD_CPUTIME_ID;
static double now(void) {
    struct timespec t;
    clock_gettime(clk, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}
static float *rnd(size_t n, float s) {
    float *x = aligned_alloc(64, (n * 4 + 63) & ~(size_t)63);
    for (size_t i = 0; i < n; i++) x[i] = s * ((float)rand() / (float)RAND_MAX - 0.5f);
    return x;
}
static uint16_t *to16(const float *x, size_t n) {
    uint16_t *h = aligned_alloc(64, (n * 2 + 63) & ~(size_t)63);
    lunar_cpu_cast_bf16(h, x, n);
    return h;
}
static double maxdiff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > m || d != d) m = d;
    }
    return m;
}

/* t[v][k] = min(t[v][k], the time of the call) */
#define TIME(slot, call)                                                                                              \
    do {                                                                                                              \
        double t0_ = now();                                                                                           \
        call;                                                                                                         \
        t0_ = now() - t0_;                                                                                            \
        if (t0_ < t[v][slot]) t[v][slot] = t0_;                                                                       \
    } while (0)

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 9;
    int only = argc > 2 ? atoi(argv[2]) : -1;
    if (getenv("ATTN_AB_WALL")) clk = CLOCK_MONOTONIC;
    const struct { int b, n, h, d, nk; } sh[] = {{128, 50, 3, 64, 0}, {8, 197, 6, 64, 0},   {1, 400, 12, 64, 0},
                                               {1, 784, 12, 64, 0}, {1, 392, 12, 64, 392}, {1, 392, 12, 64, 784}};
    const char *nm[6] = {"f32 fwd", "f32 bwd", "bf16 fwd", "bf16 bwd", "block fwd", "block bwd"};
    printf("attention_ab: GFLOP/s base -> new, best of %d, %s time\n", reps,
           clk == CLOCK_MONOTONIC ? "wall" : "thread CPU");
    for (int s = 0; s < 6; s++) {
        if (only >= 0 && only != s) continue;
        int B = sh[s].b, N = sh[s].n, H = sh[s].h, D = sh[s].d, NK = sh[s].nk;
        srand(1);
        size_t nq = (size_t)B * N * 3 * H * D, no = (size_t)B * N * H * D, nl = (size_t)B * H * N;
        size_t nk = (size_t)B * (NK ? NK : 1) * 2 * H * D;
        float *qkv = rnd(nq, 3), *dout = rnd(no, 1), *kv = rnd(nk, 3);
        uint16_t *qkv16 = to16(qkv, nq), *dout16 = to16(dout, no);
        float *o[2], *l[2], *dq[2], *dk[2];
        uint16_t *o16[2], *dq16[2];
        for (int v = 0; v < 2; v++) {
            o[v] = rnd(no, 0); l[v] = rnd(nl, 0); dq[v] = rnd(nq, 0); dk[v] = rnd(nk, 0);
            o16[v] = to16(o[v], no); dq16[v] = to16(dq[v], nq);
        }
        double t[2][6];
        for (int v = 0; v < 2; v++)
            for (int k = 0; k < 6; k++) t[v][k] = 1e30;
        for (int r = 0; r < reps; r++) {
            for (int v = 0; v < 2; v++) { /* v 0: base, 1: new; backward reads the new forward's out, lse */
                if (!NK) {
                    TIME(0, v ? lunar_cpu_attention_forward(o[v], l[v], qkv, B, N, H, D)
                              : base_fwd(o[v], l[v], qkv, B, N, H, D));
                    TIME(1, v ? lunar_cpu_attention_backward(dq[v], dout, qkv, o[1], l[1], B, N, H, D)
                              : base_bwd(dq[v], dout, qkv, o[1], l[1], B, N, H, D));
                    TIME(2, v ? lunar_cpu_attention_forward_bf16(o16[v], l[v], qkv16, B, N, H, D)
                              : base_fwd16(o16[v], l[v], qkv16, B, N, H, D));
                    lunar_cpu_attention_forward_bf16(o16[1], l[1], qkv16, B, N, H, D);
                    TIME(3, v ? lunar_cpu_attention_backward_bf16(dq16[v], dout16, qkv16, o16[1], l[1], B, N, H, D)
                              : base_bwd16(dq16[v], dout16, qkv16, o16[1], l[1], B, N, H, D));
                    lunar_cpu_attention_forward(o[1], l[1], qkv, B, N, H, D);
                } else { /* this rank's own block (overwrite), then another's merged in (timed) */
                    if (v) lunar_cpu_attention_block_forward(o[v], l[v], qkv, qkv + H * D, B, N, N, H, D, 0);
                    else base_bfwd(o[v], l[v], qkv, qkv + H * D, B, N, N, H, D, 0);
                    TIME(4, v ? lunar_cpu_attention_block_forward(o[v], l[v], qkv, kv, B, N, NK, H, D, 1)
                              : base_bfwd(o[v], l[v], qkv, kv, B, N, NK, H, D, 1));
                    memset(dq[v], 0, 4 * nq);
                    memset(dk[v], 0, 4 * nk);
                    TIME(5, v ? lunar_cpu_attention_block_backward(dq[v], dk[v], dout, qkv, kv, o[1], l[1], B, N, NK,
                                                                   H, D)
                              : base_bbwd(dq[v], dk[v], dout, qkv, kv, o[1], l[1], B, N, NK, H, D));
                }
            }
        }
        double fl = 4.0 * B * H * (double)N * (NK ? NK : N) * D;
        printf("  B %3d Nq %3d Nk %3d H %2d D %d", B, N, NK ? NK : N, H, D);
        for (int k = NK ? 4 : 0; k < (NK ? 6 : 4); k++) {
            double f = (k % 2 ? 2.5 : 1.0) * fl;
            printf(" | %s %.0f -> %.0f", nm[k], f / t[0][k] * 1e-9, f / t[1][k] * 1e-9);
        }
        printf(" | max diff out %.1e dq %.1e", maxdiff(o[0], o[1], no), maxdiff(dq[0], dq[1], nq));
        if (NK) printf(" dkv %.1e", maxdiff(dk[0], dk[1], nk));
        printf("\n");
        free(qkv); free(dout); free(kv); free(qkv16); free(dout16);
        for (int v = 0; v < 2; v++) { free(o[v]); free(l[v]); free(dq[v]); free(dk[v]); free(o16[v]); free(dq16[v]); }
    }
    return 0;
}
