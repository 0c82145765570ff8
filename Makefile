# Lunar: build, test, run, bench.
#
#   make            liblunar (core/) and the host program `lunar` (bindings/)
#   make run        the main job: ViT on Fashion-MNIST (ARGS='key=value ...')
#   make test       every test suite; ends with "N passed, N failed"
#   make bench      bench/vs_pytorch (needs python3-torch; not a test)
#   make bench-build  bench programs (build/bench/comm_bench: Lunar vs raw MPI all_reduce)
#
# Optional parts are detected and reported (llm.c style): NO_MPI=1, NO_OMP=1
# switch them off; CUDA=1 asks for the CUDA backend (issue: CUDA backend).

SHELL := /bin/bash
BUILD ?= build
.DEFAULT_GOAL := all
ARGS ?=

# --- dependencies -------------------------------------------------------------
DEPS_STAMP := $(BUILD)/.deps
$(DEPS_STAMP): scripts/install_deps.sh
	@bash scripts/install_deps.sh
	@mkdir -p $(BUILD) && touch $@

# pkg-config is evaluated lazily (after the deps stamp ran)
PKGS := lua5.4 openblas libcjson readline zlib
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

# --- compiler and flags -------------------------------------------------------
CC ?= cc
ifeq ($(CC),cc)
  CC := gcc
endif
CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Wno-unused-parameter -fPIC \
               -Icore/include
ifeq ($(shell $(CC) -march=native -x c -E /dev/null >/dev/null 2>&1 && echo ok),ok)
  CFLAGS_BASE += -march=native
endif
ifneq ($(NO_OMP),1)
  ifeq ($(shell echo 'int main(){return 0;}' | $(CC) -fopenmp -x c - -o /dev/null 2>/dev/null && echo ok),ok)
    CFLAGS_BASE += -fopenmp
    LDFLAGS_OMP := -fopenmp
    $(info ✓ OpenMP found)
  else
    $(info ✗ OpenMP not found: single-threaded kernels)
  endif
endif

# MPI: when mpicc exists, the host, core/comm/ (comm_mpi.c; else comm_single.c)
# and everything that links liblunar (tests, benches) are built with it
MPICC := $(shell command -v mpicc 2>/dev/null)
ifeq ($(NO_MPI),1)
  MPICC :=
endif
ifneq ($(MPICC),)
  HOST_CC := $(MPICC)
  HOST_DEFS := -DLUNAR_USE_MPI
  $(info ✓ MPI found ($(MPICC)))
else
  HOST_CC := $(CC)
  HOST_DEFS :=
  $(info ✗ MPI not found: single-rank build)
endif

# CUDA toolkit (the backend itself is the CUDA issue's work)
NVCC := $(shell test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc)
ifneq ($(NVCC),)
  $(info ✓ CUDA toolkit found ($(NVCC)); CUDA backend: not built yet)
else
  $(info ✗ CUDA toolkit not found: CPU only)
endif

CFLAGS = $(CFLAGS_BASE) $(PKG_CFLAGS)
LDLIBS = $(PKG_LIBS) -lm -lpthread $(LDFLAGS_OMP)

# --- sources --------------------------------------------------------------------
CORE_SRC := $(wildcard core/*.c core/ops/*.c core/ops/ref/*.c core/ops/cpu/*.c core/data/*.c core/io/*.c \
                      core/comm/*.c)
CORE_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(CORE_SRC))
BIND_SRC := $(wildcard bindings/*.c)
BIND_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(BIND_SRC))
LIB := $(BUILD)/liblunar.a
TEST_C_SRC := $(wildcard tests/c/test_*.c)
TEST_C_BIN := $(patsubst tests/c/%.c,$(BUILD)/tests/%,$(TEST_C_SRC))

.PHONY: all lunar run test test-c test-lua test-fail test-mpi bench bench-build clean deps
all: lunar
deps: $(DEPS_STAMP)
lunar: $(BUILD)/lunar

$(BUILD)/core/%.o: core/%.c $(wildcard core/include/lunar/*.h core/*/*.h core/ops/*/*.h) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# the communicator: comm_mpi.c with MPI (-DLUNAR_USE_MPI), else comm_single.c
$(BUILD)/core/comm/%.o: core/comm/%.c core/comm/internal.h $(wildcard core/include/lunar/*.h) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(HOST_CC) $(CFLAGS) $(HOST_DEFS) -c $< -o $@

$(BUILD)/bindings/%.o: bindings/%.c $(wildcard bindings/*.h core/include/lunar/*.h) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(HOST_CC) $(CFLAGS) $(HOST_DEFS) -c $< -o $@

$(LIB): $(CORE_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/lunar: $(BIND_OBJ) $(LIB)
	$(HOST_CC) $(BIND_OBJ) $(LIB) -o $@ $(LDLIBS)

# liblunar holds MPI calls in an MPI build: everything linking it uses $(HOST_CC)
$(BUILD)/tests/%: tests/c/%.c tests/c/test.h $(LIB)
	@mkdir -p $(dir $@)
	$(HOST_CC) $(CFLAGS) $(HOST_DEFS) $< $(LIB) -o $@ $(LDLIBS)

$(BUILD)/bench/comm_bench: bench/comm_bench.c $(LIB)
	@mkdir -p $(dir $@)
	@if [ -z "$(HOST_DEFS)" ]; then echo "comm_bench needs MPI (mpicc)"; exit 1; fi
	$(HOST_CC) $(CFLAGS) $(HOST_DEFS) $< $(LIB) -o $@ $(LDLIBS)

# --- run, test, bench ----------------------------------------------------------------
run: $(BUILD)/lunar
	./$(BUILD)/lunar examples/train_with_engine.lua --config configs/vit_fmnist.lua $(ARGS)

test: $(BUILD)/lunar $(TEST_C_BIN)
	@BUILD=$(BUILD) bash tests/run_all.sh

test-c: $(TEST_C_BIN)
	@bash tests/run_all.sh c

test-lua: $(BUILD)/lunar
	@bash tests/run_all.sh lua

test-fail: $(BUILD)/lunar
	@bash tests/run_all.sh fail

test-mpi: $(BUILD)/lunar $(BUILD)/tests/test_comm
	@bash tests/run_all.sh mpi

bench: $(BUILD)/lunar
	@bash bench/vs_pytorch

bench-build: $(BUILD)/lunar $(BUILD)/bench/comm_bench

clean:
	rm -rf $(BUILD) lunar
