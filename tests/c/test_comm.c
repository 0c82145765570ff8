/*
 * tests/c/test_comm.c: the communicator (core/include/lunar/comm.h).
 *
 * Run alone (tests/run_all.sh c) it is a world of one rank: collectives are
 * identities or copies, and every argument error (sizes, dtypes, ranks,
 * layout, point to point to self) gives a message naming the op, the
 * communicator, the rank and the sizes. Built with MPI it starts MPI
 * through lunar_comm_init (C tests run without the host), and under mpirun -np N
 * (tests/mpi/test_comm.sh, N = 4) it also checks every collective with
 * rank-dependent values (rank r contributes r + 1), on the world and on split
 * groups, blocking and non-blocking, and MPI errors (truncation) coming back
 * as messages. Every rank prints its own "N passed, N failed"; the exit status
 * is non-zero on every rank when any rank failed.
 */
#include <stdint.h>
#include <stdlib.h>

#ifdef LUNAR_USE_MPI
#include <mpi.h>
#endif

#include "test.h"
#include "lunar/comm.h"

static lunar_comm *W;
static int R, N;

static lunar_tensor *vec(lunar_dtype dt, int64_t n) {
    int64_t shape[1] = {n};
    return lunar_tensor_zeros(dt, 1, shape, LUNAR_CPU);
}

static float *F(lunar_tensor *t) { return lunar_tensor_data(t); }

static int has(const char *msg, const char *needle) { return strstr(msg, needle) != NULL; }

#define CHECK_ERR(call, ...)                                                            \
    do {                                                                                \
        lunar_clear_error();                                                            \
        lunar_status st_ = (call);                                                      \
        CHECK_MSG(st_ != LUNAR_OK, "%s succeeded, expected an error", #call);           \
        const char *needles_[] = {__VA_ARGS__, NULL};                                   \
        for (int k_ = 0; needles_[k_]; k_++)                                            \
            CHECK_MSG(has(lunar_last_error(), needles_[k_]), "message '%s' lacks '%s'", \
                      lunar_last_error(), needles_[k_]);                                \
    } while (0)

/* ---- any size ------------------------------------------------------------------ */

static void test_world(void) {
    CHECK(W != NULL);
    CHECK(lunar_comm_world() == W);
    CHECK_MSG(lunar_comm_size(W) >= 1 && lunar_comm_rank(W) >= 0 && lunar_comm_rank(W) < lunar_comm_size(W),
              "rank %d size %d", lunar_comm_rank(W), lunar_comm_size(W));
    CHECK(strcmp(lunar_comm_name(W), "world") == 0);
    lunar_comm_free(W);  /* ignored for the world */
    CHECK(lunar_comm_size(lunar_comm_world()) == N);
}

static void test_size_mismatch_messages(void) {
    lunar_tensor *a = vec(LUNAR_F32, 3), *b = vec(LUNAR_F32, 2);
    char rankstr[64], want[128];
    snprintf(rankstr, sizeof rankstr, "comm 'world' (rank %d of %d)", R, N);
    /* all_gather: out must be size * in */
    lunar_tensor *out = vec(LUNAR_F32, (int64_t)N * 2 + 1), *in = vec(LUNAR_F32, 2);
    snprintf(want, sizeof want, "out has %d elements, expected size * in = %d * 2 = %d", N * 2 + 1, N,
             N * 2);
    CHECK_ERR(lunar_comm_all_gather(W, out, in), "all_gather: ", rankstr, want);
    CHECK_ERR(lunar_comm_iall_gather(W, out, in, &(lunar_request *){NULL}), "iall_gather: ", want);
    /* reduce_scatter: in must be size * out */
    snprintf(want, sizeof want, "in has 2 elements, expected size * out = %d * %d = %d", N, N * 2 + 1,
             N * (N * 2 + 1));
    CHECK_ERR(lunar_comm_reduce_scatter(W, out, in, LUNAR_SUM), "reduce_scatter: ", rankstr, want);
    CHECK_ERR(lunar_comm_ireduce_scatter(W, out, in, LUNAR_SUM, &(lunar_request *){NULL}),
              "ireduce_scatter: ", want);
    /* dtypes */
    lunar_tensor *bf = vec(LUNAR_BF16, 2), *bfo = vec(LUNAR_F32, (int64_t)N * 2);
    CHECK_ERR(lunar_comm_all_gather(W, bfo, bf), "all_gather: ", "dtype of out (f32) differs from in (bf16)");
    CHECK_ERR(lunar_comm_all_reduce(W, bf, LUNAR_SUM), "all_reduce: ", "bf16", "cannot be reduced");
    lunar_tensor *iv = vec(LUNAR_I32, 2);
    CHECK_ERR(lunar_comm_all_reduce(W, iv, LUNAR_AVG), "all_reduce: ", "'avg'", "i32");
    CHECK_ERR(lunar_comm_iall_reduce(W, iv, LUNAR_AVG, &(lunar_request *){NULL}), "iall_reduce: ", "'avg'");
    CHECK_ERR(lunar_comm_all_reduce(W, iv, (lunar_reduce_op)42), "all_reduce: ", "bad reduce op 42");
    /* ranks */
    char rk[64];
    snprintf(rk, sizeof rk, "root %d is not a rank of this communicator (0 .. %d)", N, N - 1);
    CHECK_ERR(lunar_comm_broadcast(W, a, N), "broadcast: ", rk);
    CHECK_ERR(lunar_comm_broadcast(W, a, -1), "broadcast: ", "root -1");
    /* layout, release, NULL */
    int64_t s2[2] = {2, 3};
    lunar_tensor *m = lunar_tensor_zeros(LUNAR_F32, 2, s2, LUNAR_CPU);
    lunar_tensor *mt = lunar_tensor_transpose(m, 0, 1);
    CHECK_ERR(lunar_comm_all_reduce(W, mt, LUNAR_SUM), "all_reduce: ", "x is not contiguous");
    lunar_tensor *rel = vec(LUNAR_F32, 2);
    lunar_tensor_release(rel);
    CHECK_ERR(lunar_comm_broadcast(W, rel, 0), "broadcast: ", "x was released");
    CHECK_ERR(lunar_comm_all_reduce(NULL, a, LUNAR_SUM), "all_reduce: no communicator");
    CHECK_ERR(lunar_comm_barrier(NULL), "barrier: no communicator");
    CHECK(lunar_comm_split(W, -1, 0) == NULL);
    CHECK_MSG(has(lunar_last_error(), "split: ") && has(lunar_last_error(), "color -1"), "%s",
              lunar_last_error());
    /* overlap */
    lunar_tensor *big = vec(LUNAR_F32, (int64_t)N * 4);
    lunar_tensor *part = lunar_tensor_narrow(big, 0, 0, 4);
    lunar_tensor *whole = lunar_tensor_narrow(big, 0, 0, (int64_t)N * 4);
    CHECK_ERR(lunar_comm_reduce_scatter(W, part, whole, LUNAR_SUM), "reduce_scatter: ", "out overlaps in");
    lunar_tensor_free(part);
    lunar_tensor_free(whole);
    lunar_tensor_free(big);
    lunar_tensor_free(m);
    lunar_tensor_free(mt);
    lunar_tensor_free(rel);
    lunar_tensor_free(iv);
    lunar_tensor_free(bf);
    lunar_tensor_free(bfo);
    lunar_tensor_free(out);
    lunar_tensor_free(in);
    lunar_tensor_free(a);
    lunar_tensor_free(b);
}

static void test_p2p_errors(void) {
    lunar_tensor *t = vec(LUNAR_F32, 4);
    lunar_request *r = (lunar_request *)&r;  /* must be set to NULL on error */
    CHECK_ERR(lunar_comm_send(W, t, R, 0), "send: ", "dst", "is this rank");
    CHECK_ERR(lunar_comm_recv(W, t, R, 0), "recv: ", "src", "is this rank");
    CHECK_ERR(lunar_comm_isend(W, t, R, 0, &r), "isend: ", "is this rank");
    CHECK(r == NULL);
    CHECK_ERR(lunar_comm_irecv(W, t, R, 0, &r), "irecv: ", "is this rank");
    CHECK_ERR(lunar_comm_send(W, t, N, 0), "send: ", "dst", "is not a rank");
    CHECK_ERR(lunar_comm_recv(W, t, -2, 0), "recv: ", "src -2");
    if (N > 1) CHECK_ERR(lunar_comm_send(W, t, (R + 1) % N, -5), "send: ", "tag -5 is negative");
    lunar_tensor_free(t);
}

static void test_requests_null(void) {
    CHECK(lunar_request_wait(NULL) == LUNAR_OK);
    CHECK(lunar_request_test(NULL) == 1);
}

/* ---- one rank: identities and copies -------------------------------------------- */

static void test_single_identities(void) {
    if (N != 1) return;
    lunar_tensor *t = vec(LUNAR_F32, 3);
    for (int i = 0; i < 3; i++) F(t)[i] = (float)i + 0.5f;
    for (int op = LUNAR_SUM; op <= LUNAR_MIN; op++) {
        CHECK(lunar_comm_all_reduce(W, t, (lunar_reduce_op)op) == LUNAR_OK);
        for (int i = 0; i < 3; i++) CHECK_CLOSE(F(t)[i], i + 0.5, 0, 0);
    }
    lunar_request *r = NULL;
    CHECK(lunar_comm_iall_reduce(W, t, LUNAR_AVG, &r) == LUNAR_OK);
    CHECK(lunar_request_test(r) == 1);
    CHECK(lunar_request_wait(r) == LUNAR_OK);
    for (int i = 0; i < 3; i++) CHECK_CLOSE(F(t)[i], i + 0.5, 0, 0);
    lunar_tensor *o = vec(LUNAR_F32, 3);
    CHECK(lunar_comm_all_gather(W, o, t) == LUNAR_OK);
    for (int i = 0; i < 3; i++) CHECK_CLOSE(F(o)[i], i + 0.5, 0, 0);
    lunar_tensor *o2 = vec(LUNAR_F32, 3);
    CHECK(lunar_comm_reduce_scatter(W, o2, t, LUNAR_MAX) == LUNAR_OK);
    for (int i = 0; i < 3; i++) CHECK_CLOSE(F(o2)[i], i + 0.5, 0, 0);
    CHECK(lunar_comm_all_gather(W, o, o) == LUNAR_OK);  /* in place: in is block 0 of out */
    CHECK(lunar_comm_broadcast(W, t, 0) == LUNAR_OK);
    CHECK(lunar_comm_barrier(W) == LUNAR_OK);
    r = NULL;
    CHECK(lunar_comm_iall_gather(W, o, t, &r) == LUNAR_OK);
    CHECK(lunar_request_wait(r) == LUNAR_OK);
    r = NULL;
    CHECK(lunar_comm_ireduce_scatter(W, o2, t, LUNAR_SUM, &r) == LUNAR_OK);
    CHECK(lunar_request_wait(r) == LUNAR_OK);
    for (int i = 0; i < 3; i++) CHECK_CLOSE(F(o2)[i], i + 0.5, 0, 0);
    lunar_tensor_free(t);
    lunar_tensor_free(o);
    lunar_tensor_free(o2);
}

static void test_split_names(void) {
    lunar_comm *s = lunar_comm_split(W, 3, R);
    CHECK_MSG(s != NULL, "%s", lunar_last_error());
    CHECK(lunar_comm_size(s) == N && lunar_comm_rank(s) == R);
    CHECK_MSG(strcmp(lunar_comm_name(s), "world/3") == 0, "%s", lunar_comm_name(s));
    lunar_comm_set_name(s, "dp");
    CHECK(strcmp(lunar_comm_name(s), "dp") == 0);
    lunar_tensor *x = vec(LUNAR_F32, (int64_t)N + 1), *y = vec(LUNAR_F32, 1);
    CHECK_ERR(lunar_comm_all_gather(s, x, y), "all_gather: comm 'dp'");
    lunar_tensor_free(x);
    lunar_tensor_free(y);
    lunar_comm_free(s);
}

/* ---- several ranks -------------------------------------------------------------- */

static void test_all_reduce_ops(void) {
    if (N < 2) return;
    double sum = N * (N + 1) / 2.0;
    lunar_tensor *t = vec(LUNAR_F32, 5);
    struct { lunar_reduce_op op; double want; } cases[] = {
        {LUNAR_SUM, sum}, {LUNAR_AVG, sum / N}, {LUNAR_MAX, N}, {LUNAR_MIN, 1}};
    for (int k = 0; k < 4; k++) {
        for (int i = 0; i < 5; i++) F(t)[i] = (float)(R + 1) * (float)(i + 1);
        CHECK(lunar_comm_all_reduce(W, t, cases[k].op) == LUNAR_OK);
        for (int i = 0; i < 5; i++) CHECK_CLOSE(F(t)[i], cases[k].want * (i + 1), 1e-6, 0);
    }
    lunar_tensor *d = vec(LUNAR_F64, 2), *i64 = vec(LUNAR_I64, 2), *i32 = vec(LUNAR_I32, 2);
    ((double *)lunar_tensor_data(d))[0] = R + 1;
    ((int64_t *)lunar_tensor_data(i64))[1] = ((int64_t)1 << 40) * (R + 1);
    ((int32_t *)lunar_tensor_data(i32))[0] = -(R + 1);
    CHECK(lunar_comm_all_reduce(W, d, LUNAR_AVG) == LUNAR_OK);
    CHECK(lunar_comm_all_reduce(W, i64, LUNAR_SUM) == LUNAR_OK);
    CHECK(lunar_comm_all_reduce(W, i32, LUNAR_MIN) == LUNAR_OK);
    CHECK_CLOSE(((double *)lunar_tensor_data(d))[0], (N + 1) / 2.0, 1e-15, 0);
    CHECK(((int64_t *)lunar_tensor_data(i64))[1] == ((int64_t)1 << 40) * (int64_t)sum);
    CHECK(((int32_t *)lunar_tensor_data(i32))[0] == -N);
    lunar_tensor_free(t);
    lunar_tensor_free(d);
    lunar_tensor_free(i64);
    lunar_tensor_free(i32);
}

static void test_gather_scatter_bcast(void) {
    if (N < 2) return;
    const int n = 3;
    lunar_tensor *in = vec(LUNAR_F32, n), *out = vec(LUNAR_F32, (int64_t)N * n);
    for (int i = 0; i < n; i++) F(in)[i] = (float)(10 * R + i);
    CHECK(lunar_comm_all_gather(W, out, in) == LUNAR_OK);
    for (int r = 0; r < N; r++)
        for (int i = 0; i < n; i++) CHECK_CLOSE(F(out)[r * n + i], 10 * r + i, 0, 0);
    /* reduce_scatter: in[j] = (R + 1) * (j + 1); out on rank R = sum over ranks of block R */
    lunar_tensor *rs = vec(LUNAR_F32, n);
    for (int j = 0; j < N * n; j++) F(out)[j] = (float)((R + 1) * (j + 1));
    CHECK(lunar_comm_reduce_scatter(W, rs, out, LUNAR_SUM) == LUNAR_OK);
    double s = N * (N + 1) / 2.0;
    for (int i = 0; i < n; i++) CHECK_CLOSE(F(rs)[i], s * (R * n + i + 1), 1e-6, 0);
    /* broadcast from the last rank */
    for (int i = 0; i < n; i++) F(in)[i] = (float)(R == N - 1 ? 7 + i : -1);
    CHECK(lunar_comm_broadcast(W, in, N - 1) == LUNAR_OK);
    for (int i = 0; i < n; i++) CHECK_CLOSE(F(in)[i], 7 + i, 0, 0);
    /* in-place all_gather: in is this rank's block of out (a ZeRO shard) */
    for (int j = 0; j < N * n; j++) F(out)[j] = -1;
    lunar_tensor *shard = lunar_tensor_narrow(out, 0, (int64_t)R * n, n);
    for (int i = 0; i < n; i++) F(shard)[i] = (float)(100 * R + i);
    CHECK_MSG(lunar_comm_all_gather(W, out, shard) == LUNAR_OK, "%s", lunar_last_error());
    for (int r = 0; r < N; r++)
        for (int i = 0; i < n; i++) CHECK_CLOSE(F(out)[r * n + i], 100 * r + i, 0, 0);
    lunar_tensor *wrong = lunar_tensor_narrow(out, 0, (int64_t)((R + 1) % N) * n, n);
    CHECK_ERR(lunar_comm_all_gather(W, out, wrong), "all_gather: ", "not block");
    /* bf16 moves as 16-bit words */
    lunar_tensor *b = vec(LUNAR_BF16, 2), *bo = vec(LUNAR_BF16, (int64_t)N * 2);
    ((uint16_t *)lunar_tensor_data(b))[0] = lunar_f32_to_bf16((float)R + 0.5f);
    ((uint16_t *)lunar_tensor_data(b))[1] = lunar_f32_to_bf16(-(float)R);
    CHECK(lunar_comm_all_gather(W, bo, b) == LUNAR_OK);
    for (int r = 0; r < N; r++) {
        CHECK_CLOSE(lunar_tensor_get(bo, 2 * r), r + 0.5, 0, 0);
        CHECK_CLOSE(lunar_tensor_get(bo, 2 * r + 1), -r, 0, 0);
    }
    lunar_tensor_free(b);
    lunar_tensor_free(bo);
    lunar_tensor_free(wrong);
    lunar_tensor_free(shard);
    lunar_tensor_free(in);
    lunar_tensor_free(out);
    lunar_tensor_free(rs);
}

static void test_nonblocking(void) {
    if (N < 2) return;
    const int n = 4;
    lunar_tensor *a = vec(LUNAR_F32, n), *g = vec(LUNAR_F32, (int64_t)N * n), *rs = vec(LUNAR_F32, 1);
    lunar_tensor *big = vec(LUNAR_F32, N);
    for (int i = 0; i < n; i++) F(a)[i] = (float)(R + 1);
    for (int i = 0; i < N; i++) F(big)[i] = (float)(R + 1) * (i + 1);
    lunar_request *r1 = NULL, *r2 = NULL;
    CHECK(lunar_comm_iall_reduce(W, a, LUNAR_AVG, &r1) == LUNAR_OK && r1);
    CHECK(lunar_comm_ireduce_scatter(W, rs, big, LUNAR_MAX, &r2) == LUNAR_OK && r2);
    while (!lunar_request_test(r1)) {}
    CHECK(lunar_request_wait(r1) == LUNAR_OK);
    CHECK(lunar_request_wait(r2) == LUNAR_OK);
    for (int i = 0; i < n; i++) CHECK_CLOSE(F(a)[i], (N + 1) / 2.0, 1e-6, 0);
    CHECK_CLOSE(F(rs)[0], (double)N * (R + 1), 0, 0);
    for (int i = 0; i < n; i++) F(a)[i] = (float)R;
    CHECK(lunar_comm_iall_gather(W, g, a, &r1) == LUNAR_OK);
    CHECK(lunar_request_wait(r1) == LUNAR_OK);
    for (int r = 0; r < N; r++) CHECK_CLOSE(F(g)[r * n], r, 0, 0);
    /* a ring of isend / irecv */
    lunar_tensor *s = vec(LUNAR_F32, n), *q = vec(LUNAR_F32, n);
    for (int i = 0; i < n; i++) F(s)[i] = (float)(R * 10 + i);
    CHECK(lunar_comm_irecv(W, q, (R + N - 1) % N, 7, &r1) == LUNAR_OK);
    CHECK(lunar_comm_isend(W, s, (R + 1) % N, 7, &r2) == LUNAR_OK);
    CHECK(lunar_request_wait(r2) == LUNAR_OK);
    CHECK(lunar_request_wait(r1) == LUNAR_OK);
    for (int i = 0; i < n; i++) CHECK_CLOSE(F(q)[i], ((R + N - 1) % N) * 10 + i, 0, 0);
    lunar_tensor_free(s);
    lunar_tensor_free(q);
    lunar_tensor_free(a);
    lunar_tensor_free(g);
    lunar_tensor_free(rs);
    lunar_tensor_free(big);
}

static void test_blocking_ring(void) {
    if (N < 2) return;
    lunar_tensor *s = vec(LUNAR_I64, 3), *q = vec(LUNAR_I64, 3);
    for (int i = 0; i < 3; i++) ((int64_t *)lunar_tensor_data(s))[i] = R * 100 + i;
    int to = (R + 1) % N, from = (R + N - 1) % N;
    if (R % 2 == 0) {
        CHECK(lunar_comm_send(W, s, to, 1) == LUNAR_OK);
        CHECK(lunar_comm_recv(W, q, from, 1) == LUNAR_OK);
    } else {
        CHECK(lunar_comm_recv(W, q, from, 1) == LUNAR_OK);
        CHECK(lunar_comm_send(W, s, to, 1) == LUNAR_OK);
    }
    for (int i = 0; i < 3; i++) CHECK(((int64_t *)lunar_tensor_data(q))[i] == from * 100 + i);
    lunar_tensor_free(s);
    lunar_tensor_free(q);
}

static void test_split_groups(void) {
    if (N < 2) return;
    /* color = rank % 2, key = -rank: reversed order inside each group */
    lunar_comm *g = lunar_comm_split(W, R % 2, -R);
    CHECK_MSG(g != NULL, "%s", lunar_last_error());
    int members = 0, pos = 0;
    for (int r = 0; r < N; r++)
        if (r % 2 == R % 2) { members++; if (r > R) pos++; }
    CHECK_MSG(lunar_comm_size(g) == members && lunar_comm_rank(g) == pos, "size %d rank %d, want %d %d",
              lunar_comm_size(g), lunar_comm_rank(g), members, pos);
    lunar_tensor *t = vec(LUNAR_F64, 1);
    ((double *)lunar_tensor_data(t))[0] = R + 1;
    CHECK(lunar_comm_all_reduce(g, t, LUNAR_SUM) == LUNAR_OK);
    double want = 0;
    for (int r = 0; r < N; r++) if (r % 2 == R % 2) want += r + 1;
    CHECK_CLOSE(((double *)lunar_tensor_data(t))[0], want, 0, 0);
    char nm[16];
    snprintf(nm, sizeof nm, "world/%d", R % 2);
    CHECK(strcmp(lunar_comm_name(g), nm) == 0);
    CHECK(lunar_comm_barrier(g) == LUNAR_OK);
    lunar_tensor_free(t);
    lunar_comm_free(g);
}

#ifdef LUNAR_USE_MPI
/* MPI's own errors come back as messages (MPI_ERRORS_RETURN). */
static void test_mpi_errors_return(void) {
    if (N < 2) return;
    lunar_tensor *eight = vec(LUNAR_F32, 8), *four = vec(LUNAR_F32, 4), *two = vec(LUNAR_F32, 2);
    lunar_status st = LUNAR_OK;
    char msg[512] = "";
    if (R == 0) {
        CHECK(lunar_comm_send(W, eight, 1, 3) == LUNAR_OK);
        CHECK(lunar_comm_send(W, two, 1, 4) == LUNAR_OK);
    } else if (R == 1) {
        st = lunar_comm_recv(W, four, 0, 3);   /* too small: MPI_ERR_TRUNCATE */
        snprintf(msg, sizeof msg, "%s", lunar_last_error());
        CHECK_MSG(st != LUNAR_OK, "truncated recv succeeded");
        CHECK_MSG(has(msg, "recv: comm 'world' (rank 1 of") && has(msg, "MPI error: ") &&
                  has(msg, "TRUNCATE"), "%s", msg);
        st = lunar_comm_recv(W, four, 0, 4);   /* too few arrive */
        CHECK_MSG(st != LUNAR_OK, "short recv succeeded");
        CHECK_MSG(has(lunar_last_error(), "recv: ") &&
                  has(lunar_last_error(), "received 2 elements from rank 0 (tag 4), expected 4"),
                  "%s", lunar_last_error());
    }
    CHECK(lunar_comm_barrier(W) == LUNAR_OK);
    lunar_tensor_free(eight);
    lunar_tensor_free(four);
    lunar_tensor_free(two);
}
#endif

int main(int argc, char **argv) {
#ifdef LUNAR_USE_MPI
    /* before MPI_Init: the world is refused with a message */
    lunar_clear_error();
    if (lunar_comm_world() != NULL || !has(lunar_last_error(), "MPI is not initialized")) {
        fprintf(stderr, "  FAIL world before MPI_Init: '%s'\n", lunar_last_error());
        test_failed_++;
    } else {
        test_passed_++;
        printf("  ok world_before_mpi_init\n");
    }
#endif
    lunar_comm_process proc = {-1, -1, -1, -1};
    if (lunar_comm_init(&argc, &argv, &proc) != LUNAR_OK) {
        fprintf(stderr, "lunar_comm_init: %s\n", lunar_last_error());
        return 1;
    }
    W = lunar_comm_world();
    if (!W) {
        fprintf(stderr, "lunar_comm_world: %s\n", lunar_last_error());
        return 1;
    }
    R = lunar_comm_rank(W);
    N = lunar_comm_size(W);
    /* lunar_comm_init's view of the process is the world's (the launcher's
     * rank and size; a local rank within [0, size)) */
    if (proc.rank != R || proc.size != N || proc.local_rank < 0 || proc.local_rank >= N ||
        proc.thread_funneled != 1) {
        fprintf(stderr, "  FAIL comm_init: rank %d size %d local %d funneled %d, world rank %d size %d\n",
                proc.rank, proc.size, proc.local_rank, proc.thread_funneled, R, N);
        test_failed_++;
    } else {
        test_passed_++;
        printf("  ok comm_init\n");
    }
    if (N > 1) setvbuf(stdout, NULL, _IOLBF, 0);
    RUN(test_world);
    RUN(test_size_mismatch_messages);
    RUN(test_p2p_errors);
    RUN(test_requests_null);
    RUN(test_single_identities);
    RUN(test_split_names);
    RUN(test_all_reduce_ops);
    RUN(test_gather_scatter_bcast);
    RUN(test_nonblocking);
    RUN(test_blocking_ring);
    RUN(test_split_groups);
#ifdef LUNAR_USE_MPI
    RUN(test_mpi_errors_return);
    int local = test_failed_, any = 0;
    MPI_Allreduce(&local, &any, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (N > 1) printf("[rank %d of %d] ", R, N);
    int rc = TEST_SUMMARY();
    lunar_comm_finalize();
    return rc || any ? 1 : 0;
#else
    return TEST_SUMMARY();
#endif
}
