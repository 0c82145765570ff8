// tests/cuda_emu/cuda_runtime.h: <cuda_runtime.h> for the CPU emulation of the
// CUDA kernels (cuda_emu.h); found first on the include path of emu.mk.
#pragma once
#include "cuda_emu.h"
