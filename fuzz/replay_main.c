/*
 * fuzz/replay_main.c: a main() for the fuzz targets without libFuzzer, so that
 * any C compiler (gcc in `make test`) builds them: each file named on the
 * command line is read and passed once to LLVMFuzzerTestOneInput. A crash or a
 * failed invariant aborts (with the sanitizers' report when built with them);
 * otherwise it prints one line per file and exits 0.
 *
 *   build/fuzz-replay/fuzz_idx build/fuzz-seeds/idx/FILE...
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reads a whole file into a malloc'd buffer (*len bytes); NULL on error. */
static uint8_t *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    uint8_t *b = malloc(cap);
    while (b) {
        if (n == cap) {
            uint8_t *q = realloc(b, cap * 2);
            if (!q) { free(b); b = NULL; break; }
            b = q;
            cap *= 2;
        }
        size_t r = fread(b + n, 1, cap - n, f);
        if (r == 0) break;
        n += r;
    }
    if (b && ferror(f)) { free(b); b = NULL; }
    fclose(f);
    *len = n;
    return b;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE...  (runs LLVMFuzzerTestOneInput on each file)\n", argv[0]);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        size_t len = 0;
        uint8_t *buf = read_file(argv[i], &len);
        if (!buf) {
            fprintf(stderr, "%s: cannot read %s\n", argv[0], argv[i]);
            return 2;
        }
        /* an exact-size copy, so that the sanitizers see reads past the input */
        uint8_t *copy = malloc(len ? len : 1);
        if (!copy) return 2;
        for (size_t k = 0; k < len; k++) copy[k] = buf[k];
        free(buf);
        LLVMFuzzerTestOneInput(copy, len);
        free(copy);
        printf("ok %s (%zu bytes)\n", argv[i], len);
    }
    return 0;
}
