# tests/cuda_emu/emu.mk: builds Lunar with its CUDA backend running on the CPU
# emulation of tests/cuda_emu (cuda_emu.h, emu.cpp, a fake cuBLASLt), under
# AddressSanitizer and UBSan, into $(BUILD)/emu: the test programs
# test_cuda (tests/c/test_cuda.c) and lunar (for the Lua tests). A test tool
# for machines without a GPU: it checks the kernels' indexing, launch
# configurations, barriers and shuffles, and numerics against the CPU; it
# says nothing about speed. Driven by tests/cuda_emu/run.sh (make test-cuda-emu).
SHELL := /bin/bash
BUILD ?= build
EMU := $(BUILD)/emu
CUDA_INC := /usr/local/cuda/include
PKGS := lua5.4 openblas libcjson readline zlib
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

SAN := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
COMMON := -O1 -g $(SAN) -ffp-contract=off -DLUNAR_USE_CUDA -DLUNAR_CUDA_EMU -Icore/include -I$(CUDA_INC)
CFLAGS_EMU := -std=c11 -D_GNU_SOURCE -march=native -fopenmp -Wall -Wextra -Wno-unused-parameter $(COMMON) $(PKG_CFLAGS)
CXXFLAGS_EMU := -std=c++17 -Wall -Wno-unused-parameter -Wno-unused-function -Wno-unknown-pragmas \
                -Itests/cuda_emu -Icore/ops/cuda $(COMMON) -include tests/cuda_emu/cuda_emu.h

CORE_C := $(wildcard core/*.c core/ops/*.c core/ops/ref/*.c core/ops/cpu/*.c core/data/*.c core/io/*.c \
                     core/comm/*.c core/cuda/*.c)
CU := $(wildcard core/ops/cuda/*.cu)
OBJ := $(patsubst %.c,$(EMU)/%.o,$(CORE_C)) $(patsubst core/ops/cuda/%.cu,$(EMU)/cu/%.o,$(CU)) $(EMU)/emu.o
BIND := $(patsubst %.c,$(EMU)/%.o,$(wildcard bindings/*.c))
HDRS := $(wildcard core/include/lunar/*.h core/*/*.h core/ops/*/*.h core/ops/cuda/*.cuh tests/cuda_emu/*.h)

all: $(EMU)/test_cuda $(EMU)/lunar $(EMU)/lib/libcublasLt.so.13

$(EMU)/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	gcc $(CFLAGS_EMU) -c $< -o $@

# the kernel sources, rewritten for the emulation: launches and dynamic shared memory
$(EMU)/cu/%.cpp: core/ops/cuda/%.cu tests/cuda_emu/emu.mk
	@mkdir -p $(dir $@)
	sed -E -e 's/([A-Za-z_][A-Za-z0-9_:]*(<[^<>;()]*>)?)<<<(.*)>>>\(/::emu::launch(::emu::cfg(\3), \1, /' \
	       -e 's/extern __shared__ ([A-Za-z_]+) ([A-Za-z_]+)\[\];/\1 *\2 = (\1 *)::emu::dyn_smem();/' $< > $@
	@! grep -n '<<<\|extern __shared__' $@ || { echo "emu.mk: a launch the rewrite missed in $<"; exit 1; }

$(EMU)/cu/%.o: $(EMU)/cu/%.cpp $(HDRS)
	g++ $(CXXFLAGS_EMU) -c $< -o $@

$(EMU)/emu.o: tests/cuda_emu/emu.cpp $(HDRS)
	@mkdir -p $(dir $@)
	g++ $(CXXFLAGS_EMU) -c $< -o $@

$(EMU)/liblunar.a: $(OBJ)
	@rm -f $@
	ar rcs $@ $^

LIBS := $(PKG_LIBS) -lm -lpthread -ldl -fopenmp

$(EMU)/test_cuda: tests/c/test_cuda.c tests/c/test.h $(EMU)/liblunar.a
	gcc $(CFLAGS_EMU) -c $< -o $(EMU)/test_cuda.o
	g++ $(SAN) $(EMU)/test_cuda.o $(EMU)/liblunar.a -o $@ $(LIBS)

$(EMU)/lunar: $(BIND) $(EMU)/liblunar.a
	g++ $(SAN) $(BIND) $(EMU)/liblunar.a -o $@ $(LIBS)

$(EMU)/lib/libcublasLt.so.13: tests/cuda_emu/fake_cublaslt.cpp
	@mkdir -p $(dir $@)
	g++ -std=c++17 -O1 -g -fPIC -shared -ffp-contract=off -I$(CUDA_INC) $< -o $@

.PHONY: all
