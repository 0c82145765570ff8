// tests/cuda_emu/fake_cublaslt.cpp: libcublasLt.so.13 for the CUDA emulation:
// the dozen cuBLASLt calls Lunar makes (core/ops/cuda/linear.cu), on the CPU,
// with cuBLASLt's column-major conventions, so that the emulated build checks
// Lunar's mapping of row-major linear layers onto them. It also checks what a
// real cuBLASLt would refuse: layouts with ld < rows, operands whose shapes
// do not fit, pointers less aligned than the preference the algorithm was
// chosen for; it offers no fused-bias algorithm for a bias not 16-byte
// aligned (so the fallback path runs), and rounds the operands to TF32 under
// CUBLAS_COMPUTE_32F_FAST_TF32. Types, the part of cuBLASLt's
// CUBLAS_COMPUTE_32F table that Lunar uses: A and B alike, C and D alike; A
// and B CUDA_R_32F with C and D CUDA_R_32F, or A and B CUDA_R_16BF with C and
// D CUDA_R_32F or CUDA_R_16BF (the bf16 GEMMs of precision = 'bf16'); other
// combinations get no algorithm. Products are summed in double; a bf16 D gets
// the result rounded to nearest even (lunar_f32_to_bf16's rounding) from the
// f32 value a real kernel would hold. The bias vector has D's type, as
// cublasLt.h documents CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE for these kernels:
// a bias type other than D's gets no algorithm.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cublasLt.h>

namespace {

struct Desc {
    int compute, ta, tb;
    uint32_t epilogue;
    const void *bias;
    int bias_type;   // -1: unset (D's type)
};
struct Layout {
    int type;
    uint64_t rows, cols;
    int64_t ld;
};
struct Pref {
    uint32_t align[4];   // A, B, C, D
};
struct Algo {
    uint32_t magic, align[4];
};
static_assert(sizeof(Desc) <= sizeof(cublasLtMatmulDescOpaque_t), "Desc");
static_assert(sizeof(Layout) <= sizeof(cublasLtMatrixLayoutOpaque_t), "Layout");
static_assert(sizeof(Pref) <= sizeof(cublasLtMatmulPreferenceOpaque_t), "Pref");
static_assert(sizeof(Algo) <= sizeof(cublasLtMatmulAlgo_t), "Algo");

Desc *D(cublasLtMatmulDesc_t d) { return (Desc *)d; }
Layout *L(cublasLtMatrixLayout_t l) { return (Layout *)l; }
Pref *P(cublasLtMatmulPreference_t p) { return (Pref *)p; }

bool aligned(const void *p, uint32_t a) { return a == 0 || ((uintptr_t)p % a) == 0; }

// m, n, k of the problem, or false when the layouts do not fit
bool dims(Desc *d, Layout *a, Layout *b, Layout *c, Layout *dd, uint64_t *m, uint64_t *n, uint64_t *k) {
    *m = dd->rows;
    *n = dd->cols;
    *k = d->ta == CUBLAS_OP_N ? a->cols : a->rows;
    uint64_t am = d->ta == CUBLAS_OP_N ? a->rows : a->cols;
    uint64_t bk = d->tb == CUBLAS_OP_N ? b->rows : b->cols, bn = d->tb == CUBLAS_OP_N ? b->cols : b->rows;
    bool ok = am == *m && bk == *k && bn == *n && c->rows == *m && c->cols == *n;
    if (!ok)
        fprintf(stderr, "fake cuBLASLt: shapes do not fit: A %llux%llu op %d, B %llux%llu op %d, D %llux%llu\n",
                (unsigned long long)a->rows, (unsigned long long)a->cols, d->ta, (unsigned long long)b->rows,
                (unsigned long long)b->cols, d->tb, (unsigned long long)dd->rows, (unsigned long long)dd->cols);
    return ok;
}

// element i of a matrix of type t (CUDA_R_32F or CUDA_R_16BF)
float elem(const void *p, int t, uint64_t i) {
    if (t == CUDA_R_32F) return ((const float *)p)[i];
    uint32_t u = (uint32_t)((const uint16_t *)p)[i] << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

uint16_t to_bf16(float x) {   // lunar_f32_to_bf16: nearest even, NaN kept quiet
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

// the type combinations the fake serves (all in cuBLASLt's CUBLAS_COMPUTE_32F table)
bool types_ok(int ta, int tb, int tc, int td) {
    bool ab16 = ta == CUDA_R_16BF && tb == CUDA_R_16BF, ab32 = ta == CUDA_R_32F && tb == CUDA_R_32F;
    bool cd32 = tc == CUDA_R_32F && td == CUDA_R_32F, cd16 = tc == CUDA_R_16BF && td == CUDA_R_16BF;
    bool ok = (ab32 && cd32) || (ab16 && (cd32 || cd16));
    if (!ok)
        fprintf(stderr, "fake cuBLASLt: types A %d, B %d, C %d, D %d (A and B alike, C and D alike; bf16 C/D only "
                        "with bf16 A/B)\n", ta, tb, tc, td);
    return ok;
}

float tf32(float x) {   // round to nearest even at 10 mantissa bits
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7f800000u) == 0x7f800000u) return x;
    u += 0xfffu + ((u >> 13) & 1u);
    u &= ~0x1fffu;
    memcpy(&x, &u, 4);
    return x;
}

}  // namespace

extern "C" {

cublasStatus_t cublasLtCreate(cublasLtHandle_t *h) {
    static int dummy;
    *h = (cublasLtHandle_t)&dummy;
    return CUBLAS_STATUS_SUCCESS;
}

const char *cublasLtGetStatusString(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "CUBLAS_STATUS_(fake)";
    }
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t ct, cudaDataType_t st) {
    if (st != CUDA_R_32F || (ct != CUBLAS_COMPUTE_32F && ct != CUBLAS_COMPUTE_32F_FAST_TF32))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    *d = new cublasLtMatmulDescOpaque_t();
    *D(*d) = Desc{(int)ct, CUBLAS_OP_N, CUBLAS_OP_N, CUBLASLT_EPILOGUE_DEFAULT, nullptr, -1};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) { delete d; return CUBLAS_STATUS_SUCCESS; }

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a, const void *buf,
                                              size_t n) {
    switch (a) {
    case CUBLASLT_MATMUL_DESC_TRANSA: if (n != 4) return CUBLAS_STATUS_INVALID_VALUE; memcpy(&D(d)->ta, buf, 4); break;
    case CUBLASLT_MATMUL_DESC_TRANSB: if (n != 4) return CUBLAS_STATUS_INVALID_VALUE; memcpy(&D(d)->tb, buf, 4); break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE: if (n != 4) return CUBLAS_STATUS_INVALID_VALUE; memcpy(&D(d)->epilogue, buf, 4); break;
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: if (n != sizeof(void *)) return CUBLAS_STATUS_INVALID_VALUE; memcpy(&D(d)->bias, buf, n); break;
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: {
        int t;
        if (n != 4) return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&t, buf, 4);
        if (t != CUDA_R_32F && t != CUDA_R_16BF && t != -1) return CUBLAS_STATUS_NOT_SUPPORTED;
        D(d)->bias_type = t;
        break;
    }
    default: return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType t, uint64_t rows, uint64_t cols,
                                          int64_t ld) {
    if ((t != CUDA_R_32F && t != CUDA_R_16BF) || ld < (int64_t)rows || ld < 1) {
        fprintf(stderr, "fake cuBLASLt: bad layout %llux%llu ld %lld\n", (unsigned long long)rows,
                (unsigned long long)cols, (long long)ld);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    *l = new cublasLtMatrixLayoutOpaque_t();
    *L(*l) = Layout{(int)t, rows, cols, ld};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) { delete l; return CUBLAS_STATUS_SUCCESS; }

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p) {
    *p = new cublasLtMatmulPreferenceOpaque_t();
    *P(*p) = Pref{{256, 256, 256, 256}};   // cuBLASLt's defaults
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) { delete p; return CUBLAS_STATUS_SUCCESS; }

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p, cublasLtMatmulPreferenceAttributes_t a,
                                                    const void *buf, size_t n) {
    int i = a == CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES   ? 0
            : a == CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES ? 1
            : a == CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES ? 2
            : a == CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES ? 3
                                                              : -1;
    if (i >= 0) {
        if (n != 4) return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&P(p)->align[i], buf, 4);
    } else if (a != CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES) {
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a,
                                              cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c,
                                              cublasLtMatrixLayout_t dd, cublasLtMatmulPreference_t p, int req,
                                              cublasLtMatmulHeuristicResult_t res[], int *nres) {
    uint64_t m, n, k;
    if (req <= 0 || !dims(D(d), L(a), L(b), L(c), L(dd), &m, &n, &k)) return CUBLAS_STATUS_INVALID_VALUE;
    *nres = 0;
    if (!types_ok(L(a)->type, L(b)->type, L(c)->type, L(dd)->type)) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (D(d)->epilogue == CUBLASLT_EPILOGUE_BIAS && !aligned(D(d)->bias, 16)) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (D(d)->epilogue == CUBLASLT_EPILOGUE_BIAS && D(d)->bias_type != -1 && D(d)->bias_type != L(dd)->type)
        return CUBLAS_STATUS_NOT_SUPPORTED;   // the bias has D's type (non-IMMA, non-fp8 kernels)
    if (D(d)->epilogue != CUBLASLT_EPILOGUE_DEFAULT && D(d)->epilogue != CUBLASLT_EPILOGUE_BIAS)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    memset(&res[0], 0, sizeof res[0]);
    Algo al = {0x4c554e41u, {P(p)->align[0], P(p)->align[1], P(p)->align[2], P(p)->align[3]}};
    memcpy(&res[0].algo, &al, sizeof al);
    res[0].workspaceSize = 0;
    res[0].state = CUBLAS_STATUS_SUCCESS;
    res[0].wavesCount = 1.0f;
    *nres = 1;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t d, const void *alpha, const void *A,
                              cublasLtMatrixLayout_t la, const void *B, cublasLtMatrixLayout_t lb, const void *beta,
                              const void *C, cublasLtMatrixLayout_t lc, void *Dp, cublasLtMatrixLayout_t ld,
                              const cublasLtMatmulAlgo_t *algo, void *ws, size_t wss, cudaStream_t s) {
    uint64_t m, n, k;
    if (!algo || !dims(D(d), L(la), L(lb), L(lc), L(ld), &m, &n, &k)) return CUBLAS_STATUS_INVALID_VALUE;
    Algo al;
    memcpy(&al, algo, sizeof al);
    if (al.magic != 0x4c554e41u) return CUBLAS_STATUS_INVALID_VALUE;
    if (!aligned(A, al.align[0]) || !aligned(B, al.align[1]) || !aligned(C, al.align[2]) || !aligned(Dp, al.align[3])) {
        fprintf(stderr, "fake cuBLASLt: a pointer is less aligned than the algorithm was chosen for\n");
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (D(d)->epilogue == CUBLASLT_EPILOGUE_BIAS && !aligned(D(d)->bias, 16)) return CUBLAS_STATUS_NOT_SUPPORTED;
    int tya = L(la)->type, tyb = L(lb)->type, tyc = L(lc)->type, tyd = L(ld)->type;
    if (!types_ok(tya, tyb, tyc, tyd)) return CUBLAS_STATUS_NOT_SUPPORTED;
    int tybias = D(d)->bias_type == -1 ? tyd : D(d)->bias_type;
    if (D(d)->epilogue == CUBLASLT_EPILOGUE_BIAS && tybias != tyd) return CUBLAS_STATUS_NOT_SUPPORTED;
    float al_ = *(const float *)alpha, be = *(const float *)beta;
    int64_t lda = L(la)->ld, ldb = L(lb)->ld, ldc = L(lc)->ld, ldd = L(ld)->ld;
    bool t32 = D(d)->compute == CUBLAS_COMPUTE_32F_FAST_TF32 && tya == CUDA_R_32F;
    for (uint64_t j = 0; j < n; j++)
        for (uint64_t i = 0; i < m; i++) {
            double sum = 0.0;
            for (uint64_t l = 0; l < k; l++) {
                float x = elem(A, tya, D(d)->ta == CUBLAS_OP_N ? i + l * lda : l + i * lda);
                float y = elem(B, tyb, D(d)->tb == CUBLAS_OP_N ? l + j * ldb : j + l * ldb);
                if (t32) { x = tf32(x); y = tf32(y); }
                sum += (double)x * (double)y;
            }
            double v = al_ * sum;
            if (be != 0.0f) v += (double)be * elem(C, tyc, i + j * ldc);   // C is not read when beta = 0
            if (D(d)->epilogue == CUBLASLT_EPILOGUE_BIAS) v += elem(D(d)->bias, tybias, i);
            if (tyd == CUDA_R_32F) ((float *)Dp)[i + j * ldd] = (float)v;
            else ((uint16_t *)Dp)[i + j * ldd] = to_bf16((float)v);
        }
    return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"
