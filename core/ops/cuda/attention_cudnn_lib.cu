// core/ops/cuda/attention_cudnn_lib.cu: libcudnn, opened with dlopen at the
// first bf16 / f16 attention (libcudnn.so.9, then libcudnn_graph.so.9, or
// LUNAR_CUDNN_LIBRARY), like cuBLASLt in linear.cu: the binary starts and runs
// where cuDNN is missing, and says why it is not used (dnn_reason). cuDNN 9 is
// required (the backend graph API of cudnn_graph.h). Never in the CPU
// emulation of tests/cuda_emu. A build without cudnn_graph.h never loads it.
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "attention_cudnn.cuh"

using namespace lunar_cuda;

namespace lunar_attn {

#if LUNAR_HAVE_CUDNN

DnnApi dnn;
size_t dnn_version;
char dnn_reason[512];

namespace {

bool dnn_ok;
pthread_once_t dnn_once = PTHREAD_ONCE_INIT;

template <typename F> bool load_sym(void *h, const char *lib, const char *name, F *out, bool required = true) {
    *out = (F)dlsym(h, name);
    if (!*out && required) {
        const char *e = dlerror();
        snprintf(dnn_reason, sizeof dnn_reason, "cuDNN not usable: %s has no symbol %s (%s)", lib, name, e ? e : "?");
    }
    return *out != nullptr || !required;
}

void dnn_load() {
    const char *env = getenv("LUNAR_CUDNN_LIBRARY");
    if (env && !*env) env = nullptr;
#ifdef LUNAR_CUDA_EMU
    // the CPU emulation's streams and memory are not CUDA's: the real libcudnn
    // must never see them
    (void)env;
    snprintf(dnn_reason, sizeof dnn_reason, "cuDNN not available: it is not part of the CPU emulation of tests/cuda_emu");
    return;
#endif
    const char *names[2] = {"libcudnn.so.9", "libcudnn_graph.so.9"};
    int nnames = 2;
    if (env) { names[0] = env; nnames = 1; }
    void *h = nullptr;
    const char *lib = names[0];
    char first_err[300] = "";
    for (int i = 0; i < nnames && !h; i++) {
        h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (h) lib = names[i];
        else if (!first_err[0]) {
            const char *e = dlerror();
            snprintf(first_err, sizeof first_err, "%s", e ? e : "?");
        }
    }
    if (!h) {
        snprintf(dnn_reason, sizeof dnn_reason, "cuDNN not available: dlopen(%s): %s", names[0], first_err);
        return;
    }
    bool ok = load_sym(h, lib, "cudnnGetVersion", &dnn.get_version) &&
              load_sym(h, lib, "cudnnGetErrorString", &dnn.error_string) &&
              load_sym(h, lib, "cudnnGetLastErrorString", &dnn.last_error, false) &&
              load_sym(h, lib, "cudnnCreate", &dnn.create) && load_sym(h, lib, "cudnnSetStream", &dnn.set_stream) &&
              load_sym(h, lib, "cudnnBackendCreateDescriptor", &dnn.desc_create) &&
              load_sym(h, lib, "cudnnBackendDestroyDescriptor", &dnn.desc_destroy) &&
              load_sym(h, lib, "cudnnBackendFinalize", &dnn.finalize) &&
              load_sym(h, lib, "cudnnBackendSetAttribute", &dnn.set) &&
              load_sym(h, lib, "cudnnBackendGetAttribute", &dnn.get) &&
              load_sym(h, lib, "cudnnBackendExecute", &dnn.execute);
    if (!ok) return;
    dnn_version = dnn.get_version();
    if (dnn_version < 90000) {
        snprintf(dnn_reason, sizeof dnn_reason,
                 "cuDNN not usable: %s is version %zu.%zu.%zu; the attention graph needs cuDNN 9", lib,
                 dnn_version / 1000, dnn_version / 100 % 10, dnn_version % 100);   // cuDNN 8 numbering
        dnn_version = 0;
        return;
    }
    dnn_ok = true;
}

const char *status_str(cudnnStatus_t st) { return dnn.error_string ? dnn.error_string(st) : "cuDNN error"; }

}  // namespace

bool dnn_loaded() {
    pthread_once(&dnn_once, dnn_load);
    return dnn_ok;
}

void describe(char *buf, size_t n, cudnnStatus_t st) {
    char last[256] = "";
    if (dnn.last_error) dnn.last_error(last, sizeof last);
    snprintf(buf, n, "%s (%d)%s%s", status_str(st), (int)st, last[0] ? "; " : "", last);
}

bool exec_check(cudnnStatus_t st, const char *file, int line, const char *what) {
    if (st == CUDNN_STATUS_SUCCESS) return true;
    char m[400];
    describe(m, sizeof m, st);
    lunar_cuda_record_error(file, line, what, m);
    return false;
}

#else  // no cudnn_graph.h at build time: cuDNN is never used

size_t dnn_version;
char dnn_reason[512] = "cuDNN not available: this build found no cudnn_graph.h (the cuDNN 9 headers) when it "
                      "was compiled";
bool dnn_loaded() { return false; }

#endif  // LUNAR_HAVE_CUDNN

}  // namespace lunar_attn
