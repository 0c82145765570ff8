/*
 * lunar/half.h: the 16-bit float conversions, written once for the host (C)
 * and the device (CUDA: __host__ __device__), in integer arithmetic, so every
 * architecture gives the same bits (denormals kept, no flush to zero):
 *   lunar_half_f32_to_bf16  f32 -> bf16, round to nearest even, NaN kept a
 *                           quiet NaN (the high half of the f32, as
 *                           PyTorch's and cuBLASLt's CUDA_R_16BF);
 *   lunar_half_bf16_to_f32  bf16 -> f32 (exact);
 *   lunar_half_f32_to_f16   f32 -> IEEE binary16, round to nearest even,
 *                           overflow to infinity, NaN kept a quiet NaN;
 *   lunar_half_f16_to_f32   binary16 -> f32 (exact).
 * The public host functions lunar_f32_to_bf16 etc. (lunar/tensor.h) are these;
 * the CUDA kernels (core/ops/cuda) call these directly.
 */
#ifndef LUNAR_HALF_H
#define LUNAR_HALF_H

#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define LUNAR_HALF_FN __host__ __device__ static inline
#else
#define LUNAR_HALF_FN static inline
#endif

LUNAR_HALF_FN uint32_t lunar_half_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

LUNAR_HALF_FN float lunar_half_float(uint32_t u) {
    float x;
    memcpy(&x, &u, 4);
    return x;
}

LUNAR_HALF_FN uint16_t lunar_half_f32_to_bf16(float x) {
    uint32_t u = lunar_half_bits(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);   /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);                                             /* nearest even */
    return (uint16_t)(u >> 16);
}

LUNAR_HALF_FN float lunar_half_bf16_to_f32(uint16_t h) { return lunar_half_float((uint32_t)h << 16); }

LUNAR_HALF_FN uint16_t lunar_half_f32_to_f16(float x) {
    uint32_t f = lunar_half_bits(x);
    uint32_t sign = (f >> 16) & 0x8000u;
    int32_t exp = (int32_t)((f >> 23) & 0xff) - 127 + 15;
    uint32_t mant = f & 0x7fffffu;
    if (((f >> 23) & 0xff) == 0xff) return (uint16_t)(sign | 0x7c00u | (mant ? 0x200u : 0));
    if (exp >= 31) return (uint16_t)(sign | 0x7c00u);
    if (exp <= 0) {   /* subnormal or zero */
        if (exp < -10) return (uint16_t)sign;
        mant |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - exp);
        uint32_t h = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)exp << 10) | (mant >> 13), rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++;   /* a carry into the exponent is right */
    return (uint16_t)(sign | h);
}

LUNAR_HALF_FN float lunar_half_f16_to_f32(uint16_t x) {
    uint32_t sign = (uint32_t)(x & 0x8000u) << 16, exp = (x >> 10) & 0x1f, mant = x & 0x3ffu, f;
    if (exp == 0) {
        if (!mant) {
            f = sign;
        } else {   /* subnormal: normalize */
            exp = 127 - 15 + 1;
            while (!(mant & 0x400u)) { mant <<= 1; exp--; }
            f = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        f = sign | 0x7f800000u | (mant << 13);
    } else {
        f = sign | ((exp - 15 + 127) << 23) | (mant << 13);
    }
    return lunar_half_float(f);
}

#endif
