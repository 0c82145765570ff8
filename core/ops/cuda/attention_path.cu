// core/ops/cuda/attention_path.cu: which path an attention call on bf16 / f16
// inputs takes (core/cuda/attention.h): cuDNN's fused graph
// (attention_cudnn_*.cu) where LUNAR_CUDNN_ATTENTION, the library and the
// shape allow it, else the own kernel on f32 copies (attention_fallback.cu);
// the record of the path of each call (and LUNAR_ATTENTION_LOG's line), and
// the entry points of core/cuda/attention.h, kernels.h's
// lunar_cuda_attention_{forward,backward}_bf16 (precision = 'bf16') included.
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <atomic>

#include "attention_cudnn.cuh"

using namespace lunar_cuda;
using namespace lunar_attn;

namespace {

// ---------------------------------------------------------------------------
// the mode, the record of the path, the log line

std::atomic<int> g_mode{-2};   // -2: not read yet

int mode_from_env() {
    const char *s = getenv("LUNAR_CUDNN_ATTENTION");
    if (!s || !*s) return LUNAR_CUDNN_ATTN_ON;
    if (!strcmp(s, "0") || !strcasecmp(s, "off") || !strcasecmp(s, "false") || !strcasecmp(s, "no"))
        return LUNAR_CUDNN_ATTN_OFF;
    if (!strcmp(s, "2") || !strcasecmp(s, "fast")) return LUNAR_CUDNN_ATTN_FAST;
    return LUNAR_CUDNN_ATTN_ON;
}

int mode() {
    int m = g_mode.load();
    if (m == -2) {
        m = mode_from_env();
        g_mode.store(m);
    }
    return m;
}

struct PathNote {
    lunar_attn_path path = LUNAR_ATTN_PATH_NONE;
    char reason[768] = "";
};
thread_local PathNote tl_note[2];

pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
int log_on = -1;
uint64_t logged[64];
int nlogged;

uint64_t hash_str(const char *s, uint64_t h) {
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

// Records the path of this call; with LUNAR_ATTENTION_LOG=1, prints it once
// per new (direction, path, dtype, reason).
void note(int backward, lunar_attn_path path, int dtype, int B, int N, int H, int D, const char *fmt, ...) {
    PathNote &p = tl_note[backward ? 1 : 0];
    p.path = path;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p.reason, sizeof p.reason, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&log_mu);
    if (log_on < 0) {
        const char *s = getenv("LUNAR_ATTENTION_LOG");
        log_on = s && *s && strcmp(s, "0") != 0;
    }
    if (log_on) {
        uint64_t h = hash_str(p.reason, 1469598103934665603ull ^ (uint64_t)((backward * 4 + (int)path) * 8 + dtype));
        bool seen = false;
        for (int i = 0; i < nlogged && !seen; i++) seen = logged[i] == h;
        if (!seen && nlogged < 64) {   // at most 64 lines in all
            logged[nlogged++] = h;
            fprintf(stderr, "lunar: cuda:%d attention %s (%s, B=%d N=%d H=%d D=%d): %s%s%s%s\n", device(),
                    backward ? "backward" : "forward", lunar_dtype_name((lunar_dtype)dtype), B, N, H, D,
                    lunar_cuda_attention_path_name(path), p.reason[0] ? " (" : "", p.reason, p.reason[0] ? ")" : "");
        }
    }
    pthread_mutex_unlock(&log_mu);
}

// ---------------------------------------------------------------------------
// choosing the path

bool aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

// Why cuDNN cannot take this call before any graph is built ("" when it may).
void precheck(char *why, size_t n, int backward, int B, int N, int H, int D, const void *const *ptrs, int nptrs) {
    why[0] = 0;
    int m = mode();
    if (m == LUNAR_CUDNN_ATTN_OFF) {
        snprintf(why, n, "cuDNN attention disabled (LUNAR_CUDNN_ATTENTION=0)");
        return;
    }
    if (!dnn_loaded()) {
        snprintf(why, n, "%s", dnn_reason);
        return;
    }
    if (dnn_version == 91000 || dnn_version == 91001) {
        snprintf(why, n, "cuDNN 9.10.0 and 9.10.1 have known SDPA bugs (loaded: %zu)", dnn_version);
        return;
    }
    if (D % 8 != 0 || D > 256) {
        snprintf(why, n, "head dim D = %d: cuDNN's fused attention takes D %% 8 == 0 and D <= 256", D);
        return;
    }
    if (backward && N == 1) {
        snprintf(why, n, "N = 1: cuDNN's fused attention backward takes N > 1");
        return;
    }
    if (backward && dnn_version <= 91500 && N % 128 != 0) {
        // cuDNN up to 9.15 needs a padding-mask subgraph in backward when the
        // sequence is not a multiple of 128; this graph has none
        snprintf(why, n, "cuDNN %zu.%zu.%zu: backward with N %% 128 != 0 (N = %d) needs cuDNN 9.16 or newer",
                 dnn_version / 10000, dnn_version / 100 % 100, dnn_version % 100, N);
        return;
    }
    for (int i = 0; i < nptrs; i++)
        if (!aligned16(ptrs[i])) {
            snprintf(why, n, "a tensor is not 16-byte aligned");
            return;
        }
}

bool dtype_ok(lunar_dtype dtype, const char *what) {
    if (dtype == LUNAR_F32 || dtype == LUNAR_BF16 || dtype == LUNAR_F16) return true;
    char m[128];
    snprintf(m, sizeof m, "dtype %d is not one the CUDA attention takes (f32, bf16, f16)", (int)dtype);
    lunar_cuda_record_error(__FILE__, __LINE__, what, m);
    return false;
}

}  // namespace

// ---------------------------------------------------------------------------
// entry points (core/cuda/attention.h)

extern "C" void lunar_cuda_attention_note_f32(int backward, int B, int N, int H, int D) {
    if (mode() == LUNAR_CUDNN_ATTN_OFF)
        note(backward, LUNAR_ATTN_PATH_OWN, LUNAR_F32, B, N, H, D, "cuDNN attention disabled (LUNAR_CUDNN_ATTENTION=0)");
    else
        note(backward, LUNAR_ATTN_PATH_OWN, LUNAR_F32, B, N, H, D,
             "f32 inputs: cuDNN's fused attention takes bf16 or f16");
}

extern "C" void lunar_cuda_attention_forward_dt(lunar_dtype dtype, void *out, float *lse, const void *qkv, int B,
                                                int N, int H, int D) {
    if (B <= 0 || N <= 0 || H <= 0 || D <= 0) return;
    if (!dtype_ok(dtype, "attention")) return;
    if (dtype == LUNAR_F32) {
        lunar_cuda_attention_forward((float *)out, lse, (const float *)qkv, B, N, H, D);
        return;
    }
    char why[768];
    const void *ptrs[] = {out, lse, qkv};
    precheck(why, sizeof why, 0, B, N, H, D, ptrs, 3);
    if (!why[0] && cudnn_forward(dtype, out, lse, qkv, B, N, H, D, why, sizeof why)) {
        note(0, LUNAR_ATTN_PATH_CUDNN, dtype, B, N, H, D, "");
        return;
    }
    own_forward_16(dtype, out, lse, qkv, B, N, H, D);
    note(0, LUNAR_ATTN_PATH_OWN, dtype, B, N, H, D, "%s", why);
}

extern "C" void lunar_cuda_attention_backward_dt(lunar_dtype dtype, void *dqkv, const void *dout, const void *qkv,
                                                 const void *out, const float *lse, int B, int N, int H, int D) {
    if (B <= 0 || N <= 0 || H <= 0 || D <= 0) return;
    if (!dtype_ok(dtype, "attention_backward")) return;
    if (dtype == LUNAR_F32) {
        lunar_cuda_attention_backward((float *)dqkv, (const float *)dout, (const float *)qkv, (const float *)out,
                                      lse, B, N, H, D);
        return;
    }
    char why[768];
    const void *ptrs[] = {dqkv, dout, qkv, out, lse};
    precheck(why, sizeof why, 1, B, N, H, D, ptrs, 5);
    if (!why[0]) {
        int variant = mode() == LUNAR_CUDNN_ATTN_FAST ? VAR_BWD_ACCUM : VAR_BWD_DETERMINISTIC;
        if (cudnn_backward(dtype, variant, dqkv, dout, qkv, out, lse, B, N, H, D, why, sizeof why)) {
            note(1, LUNAR_ATTN_PATH_CUDNN, dtype, B, N, H, D, "");
            return;
        }
        if (variant == VAR_BWD_DETERMINISTIC && !strncmp(why, "cuDNN refused", 13)) {
            size_t k = strlen(why);
            snprintf(why + k, sizeof why - k, " [the deterministic backward graph; LUNAR_CUDNN_ATTENTION=fast "
                                              "tries the one with an f32 dQ accumulator]");
        }
    }
    own_backward_16(dtype, dqkv, dout, qkv, out, lse, B, N, H, D);
    note(1, LUNAR_ATTN_PATH_OWN, dtype, B, N, H, D, "%s", why);
}

// kernels.h's attention of precision = 'bf16' (what Lua's bf16 models reach
// through ops.h): the bf16 entries of the dtype-generic calls above, so cuDNN's
// fused graph where it serves the shape, else the own kernel on f32 copies;
// the path is recorded as for every call (lunar_cuda_attention_last_path).
extern "C" void lunar_cuda_attention_forward_bf16(uint16_t *out, float *lse, const uint16_t *qkv, int B, int N, int H,
                                                  int D) {
    lunar_cuda_attention_forward_dt(LUNAR_BF16, out, lse, qkv, B, N, H, D);
}

// Backward of lunar_cuda_attention_forward_bf16: dqkv bf16 (overwritten) from
// the bf16 dout, qkv, out and the f32 lse of forward (either path's).
extern "C" void lunar_cuda_attention_backward_bf16(uint16_t *dqkv, const uint16_t *dout, const uint16_t *qkv,
                                                   const uint16_t *out, const float *lse, int B, int N, int H, int D) {
    lunar_cuda_attention_backward_dt(LUNAR_BF16, dqkv, dout, qkv, out, lse, B, N, H, D);
}

extern "C" lunar_attn_path lunar_cuda_attention_last_path(int backward, const char **reason) {
    const PathNote &p = tl_note[backward ? 1 : 0];
    if (reason) *reason = p.reason;
    return p.path;
}

extern "C" const char *lunar_cuda_attention_path_name(lunar_attn_path path) {
    switch (path) {
    case LUNAR_ATTN_PATH_OWN: return "own kernel";
    case LUNAR_ATTN_PATH_CUDNN: return "cuDNN";
    default: return "none";
    }
}

extern "C" void lunar_cuda_set_cudnn_attention(int m) {
    if (m < 0) m = mode_from_env();
    if (m > LUNAR_CUDNN_ATTN_FAST) m = LUNAR_CUDNN_ATTN_ON;
    g_mode.store(m);
}

extern "C" int lunar_cuda_cudnn_attention(void) { return mode(); }

extern "C" int lunar_cuda_cudnn_available(void) { return dnn_loaded() ? 1 : 0; }

extern "C" const char *lunar_cuda_cudnn_unavailable_reason(void) { return dnn_loaded() ? "" : dnn_reason; }

extern "C" size_t lunar_cuda_cudnn_version(void) { return dnn_loaded() ? dnn_version : 0; }
