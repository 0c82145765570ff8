/*
 * lunar/rng.h: counter-based random numbers (Philox4x32-10).
 *
 * Source: Salmon, Moraes, Dror, Shaw, "Parallel Random Numbers: As Easy as
 * 1, 2, 3" (SC'11), the Philox4x32 round function with 10 rounds and the
 * Weyl key schedule, as in Random123 and cuRAND.
 *
 * A stream is named by (seed, stream id); element i of a stream is a pure
 * function of (seed, stream id, i). Parameter initialization uses the stream
 * id lunar_rng_stream_id(name) of the parameter's full name, so the full
 * weights never depend on the parallel layout or on the order of creation,
 * and a shard can draw only its own elements (offset). Dropout uses a stream
 * id per call site and step; the mask is recomputed in backward, never stored.
 */
#ifndef LUNAR_RNG_H
#define LUNAR_RNG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One Philox4x32-10 block: 4 random 32-bit words for a 128-bit counter and a
 * 64-bit key. */
void lunar_philox4x32_10(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]);

/* FNV-1a 64-bit hash of a string: the stream id of a named tensor. */
uint64_t lunar_rng_stream_id(const char *name);

/* The 32-bit random word number `index` of stream (seed, stream):
 * counter = (index / 4, stream), key = seed, word index % 4 of the block. */
uint32_t lunar_rng_u32(uint64_t seed, uint64_t stream, uint64_t index);

/* out[i] = uniform in [0, 1) (24-bit resolution) from words offset+i. */
void lunar_rng_uniform(float *out, size_t n, uint64_t seed, uint64_t stream, uint64_t offset,
                       float low, float high);

/* out[i] = mean + std * N(0,1) from Box-Muller on words 2(offset+i), 2(offset+i)+1. */
void lunar_rng_normal(float *out, size_t n, uint64_t seed, uint64_t stream, uint64_t offset,
                      float mean, float std);

/* Truncated normal on [a, b] (absolute bounds, as torch.nn.init.trunc_normal_ and
 * timm's trunc_normal_): inverse-CDF sampling of a uniform drawn between
 * Phi((a-mean)/std) and Phi((b-mean)/std), one word per element. */
void lunar_rng_trunc_normal(float *out, size_t n, uint64_t seed, uint64_t stream, uint64_t offset,
                            float mean, float std, float a, float b);

/* Inverse error function, double precision (|x| < 1). */
double lunar_erfinv(double x);

#ifdef __cplusplus
}
#endif
#endif
