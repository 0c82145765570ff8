# Lunar: build, test, run, bench.
#
#   make            liblunar (core/) and the host program `lunar` (bindings/)
#   make run        the main job: ViT on Fashion-MNIST (ARGS='key=value ...')
#   make test       every test suite; ends with "N passed, N failed"
#   make test-cuda-emu  the CUDA tests on the CPU emulation of tests/cuda_emu
#   make bench      bench/vs_pytorch (needs python3-torch; not a test)
#   make bench-build  bench programs (build/bench/comm_bench: Lunar vs raw MPI all_reduce)
#   make SAN=1      the sanitizer build (ASan, UBSan, LSan; CUDA and MPI off) in build-san;
#                   make test builds it as $(BUILD)-san and trains under it (tests/fail/test_sanitizer.sh)
#   make fuzz       libFuzzer targets (fuzz/, needs clang), each run FUZZ_SECONDS (60);
#                   make fuzz-build only builds them. Never part of all or test.
#
# Optional parts are detected and reported (llm.c style): NO_MPI=1, NO_OMP=1,
# NO_DNNL=1 switch them off. The CUDA backend (core/cuda, core/ops/cuda) is built when
# /usr/local/cuda/bin/nvcc exists; CUDA=0 turns it off, CUDA=1 requires it.
# A build without a GPU still runs on the CPU and says that no CUDA device is
# available when one is asked for.

SHELL := /bin/bash
# SAN=1: the sanitizer build (AddressSanitizer, UndefinedBehaviorSanitizer,
# LeakSanitizer), CPU only and single-rank (Open MPI's own allocations would
# drown the leak report), in its own directory: build-san unless BUILD is given
ifeq ($(SAN),1)
  BUILD ?= build-san
  override CUDA := 0
  override NO_MPI := 1
endif
BUILD ?= build
.DEFAULT_GOAL := all
ARGS ?=

# --- dependencies -------------------------------------------------------------
# Everything below (the compiler's flags, OpenMP, mpicc, nvcc, pkg-config) is
# detected when make reads this file, so the dependencies must be installed
# before it is read, or the first `make run` on a fresh machine would build a
# single-rank lunar. $(DEPS_MK) is an included makefile made from the deps
# stamp: GNU make first brings it up to date (running INSTALL_DEPS when the
# stamp is missing or older than scripts/install_deps.sh), then restarts and
# reads this file again, with Open MPI installed, so the first build is the
# full one. The detection reports print only on that second reading. make
# clean installs nothing. INSTALL_DEPS: the command that installs them
# (LUNAR_SKIP_DEPS=1 makes the script a no-op).
INSTALL_DEPS ?= bash scripts/install_deps.sh
DEPS_STAMP := $(BUILD)/.deps
DEPS_MK := $(BUILD)/.deps.mk
DEPS_READY := $(wildcard $(DEPS_MK))
$(DEPS_STAMP): scripts/install_deps.sh
	@$(INSTALL_DEPS)
	@mkdir -p $(BUILD) && touch $@
$(DEPS_MK): $(DEPS_STAMP)
	@echo '# scripts/install_deps.sh has run: make read the Makefile again after it' >$@
ifeq ($(filter clean,$(MAKECMDGOALS)),)
  include $(DEPS_MK)
  ifeq ($(DEPS_READY),)
    $(info dependencies first (scripts/install_deps.sh); then make reads this Makefile again)
  endif
endif
# $(call report,TEXT): prints a detection result, once the dependencies are in
report = $(if $(DEPS_READY),$(info $(1)))

# pkg-config is evaluated lazily (after the deps stamp ran)
PKGS := lua5.4 openblas libcjson readline zlib libjpeg libpng libzip libprotobuf-c libisal
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

# --- compiler and flags -------------------------------------------------------
CC ?= cc
ifeq ($(CC),cc)
  CC := gcc
endif
CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Wno-unused-parameter -fPIC \
               -Icore/include
# MARCH: the -march of the C code, native by default (where the compiler takes
# it); MARCH=x86-64-v3 builds a binary for another machine (scripts/gpu_bundle.sh)
MARCH ?= native
ifeq ($(MARCH),native)
  ifeq ($(shell $(CC) -march=native -x c -E /dev/null >/dev/null 2>&1 && echo ok),ok)
    CFLAGS_BASE += -march=native
  endif
else
  CFLAGS_BASE += -march=$(MARCH)
endif
ifneq ($(NO_OMP),1)
  ifeq ($(shell echo 'int main(){return 0;}' | $(CC) -fopenmp -x c - -o /dev/null 2>/dev/null && echo ok),ok)
    CFLAGS_BASE += -fopenmp
    LDFLAGS_OMP := -fopenmp
    $(call report,✓ OpenMP found)
  else
    $(call report,✗ OpenMP not found: single-threaded kernels)
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
  $(call report,✓ MPI found ($(MPICC)))
else
  HOST_CC := $(CC)
  HOST_DEFS :=
  $(call report,✗ MPI not found: single-rank build)
endif

# oneDNN (Debian's libdnnl-dev): the CPU GEMMs, f32 and bf16, through its
# matmul primitive (core/ops/cpu/dnnl.c), which picks AVX-512 / AVX512-BF16 /
# AMX kernels itself. Without it (or NO_DNNL=1) the f32 GEMMs are OpenBLAS's
# and the bf16 GEMMs the own AVX512-BF16 kernel (core/ops/cpu/linear_bf16.c).
DNNL_LIBS :=
USE_DNNL :=
ifeq ($(NO_DNNL),1)
  $(call report,✗ oneDNN off (NO_DNNL=1): CPU GEMMs through OpenBLAS)
else ifeq ($(shell printf '\043include <dnnl.h>\nint main(void){return dnnl_version()==0;}\n' | \
                   $(CC) -x c - -ldnnl -o /dev/null 2>/dev/null && echo ok),ok)
  USE_DNNL := 1
  CFLAGS_BASE += -DLUNAR_USE_DNNL
  DNNL_LIBS := -ldnnl
  $(call report,✓ oneDNN found: CPU GEMMs through oneDNN)
else
  $(call report,✗ oneDNN not found (libdnnl-dev): CPU GEMMs through OpenBLAS)
endif

# CUDA backend: sm_80 (A100) and sm_90 (H100/H200) machine code, plus sm_90 PTX
# that newer GPUs compile at load time. cudart is linked statically; cuBLASLt
# is opened at the first GEMM and cuDNN at the first bf16/f16 attention
# (dlopen), so the binary starts as fast as a CPU build and runs where the CUDA
# libraries are missing (CPU only). cuDNN's headers (cudnn_graph.h) are used
# when nvcc finds them; without them the attention always takes the own kernel.
CUDA_HOME := /usr/local/cuda
NVCC := $(shell test -x $(CUDA_HOME)/bin/nvcc && echo $(CUDA_HOME)/bin/nvcc)
USE_CUDA :=
ifeq ($(CUDA),0)
  $(call report,✗ CUDA backend off (CUDA=0))
else ifneq ($(NVCC),)
  USE_CUDA := 1
  $(call report,✓ CUDA backend: building with $(NVCC) for sm_80 and sm_90)
else ifeq ($(CUDA),1)
  $(error CUDA=1 but $(CUDA_HOME)/bin/nvcc was not found)
else
  $(call report,✗ CUDA toolkit not found ($(CUDA_HOME)/bin/nvcc): CPU only)
endif
CUDA_ARCH := -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=[sm_90,compute_90]
NVCCFLAGS := -O3 -std=c++17 $(CUDA_ARCH) -Icore/include -DLUNAR_USE_CUDA \
             -Xcompiler -fPIC,-Wall,-Wextra,-Wno-unused-parameter
CUDA_LDLIBS :=
CU_SRC :=
ifeq ($(USE_CUDA),1)
  CFLAGS_BASE += -DLUNAR_USE_CUDA -I$(CUDA_HOME)/include
  CUDA_LDLIBS := -L$(CUDA_HOME)/lib64 -lcudart_static -ldl -lrt -lpthread -lstdc++
  CU_SRC := $(wildcard core/ops/cuda/*.cu core/cuda/*.cu)
endif

SAN_FLAGS :=
ifeq ($(SAN),1)
  SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
endif
CFLAGS = $(CFLAGS_BASE) $(SAN_FLAGS) $(PKG_CFLAGS)
LDLIBS = $(PKG_LIBS) $(DNNL_LIBS) -lm -lpthread $(LDFLAGS_OMP) $(CUDA_LDLIBS) $(SAN_FLAGS)

# Objects depend on the build configuration (CUDA on or off, MPI), so that
# switching it (make CUDA=0 after make) rebuilds what it changes.
BUILD_CONFIG := $(BUILD)/.config
CONFIG_LINE := cuda=$(USE_CUDA) mpi=$(MPICC) dnnl=$(USE_DNNL) omp=$(LDFLAGS_OMP) march=$(MARCH)$(if $(SAN_FLAGS), san=1)
$(shell mkdir -p $(BUILD) && { [ "$$(cat $(BUILD_CONFIG) 2>/dev/null)" = "$(CONFIG_LINE)" ] || echo "$(CONFIG_LINE)" > $(BUILD_CONFIG); })

# --- sources --------------------------------------------------------------------
CORE_SRC := $(wildcard core/*.c core/ops/*.c core/ops/ref/*.c core/ops/cpu/*.c core/data/*.c core/io/*.c \
                      core/comm/*.c core/cuda/*.c)
CORE_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(CORE_SRC)) $(patsubst %.cu,$(BUILD)/%.cu.o,$(CU_SRC))
# generated: the Event protobuf of TensorBoard's files (core/io/tfevents.proto, protoc-c)
GEN := $(BUILD)/gen
CORE_OBJ += $(GEN)/tfevents.pb-c.o
BIND_SRC := $(wildcard bindings/*.c)
BIND_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(BIND_SRC))
LIB := $(BUILD)/liblunar.a
TEST_C_SRC := $(wildcard tests/c/test_*.c)
TEST_C_BIN := $(patsubst tests/c/%.c,$(BUILD)/tests/%,$(TEST_C_SRC))

.PHONY: all lunar run test san-build test-c test-lua test-fail test-mpi test-cuda-emu emu-build bench bench-build clean deps \
        fuzz fuzz-build fuzz-replay fuzz-corpus fuzz-clang
all: lunar
deps: $(DEPS_STAMP)
lunar: $(BUILD)/lunar

$(BUILD)/core/%.o: core/%.c $(wildcard core/include/lunar/*.h core/*/*.h core/ops/*/*.h) $(BUILD_CONFIG) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# protoc-c (protobuf-c-compiler) writes tfevents.pb-c.{c,h}; tfevents.c includes the header
$(GEN)/%.pb-c.c $(GEN)/%.pb-c.h: core/io/%.proto | $(DEPS_STAMP)
	@mkdir -p $(GEN)
	protoc-c --proto_path=core/io --c_out=$(GEN) $<
$(GEN)/%.pb-c.o: $(GEN)/%.pb-c.c $(BUILD_CONFIG)
	$(CC) $(CFLAGS) -c $< -o $@
$(BUILD)/core/io/tfevents.o: $(GEN)/tfevents.pb-c.h
$(BUILD)/core/io/tfevents.o: CFLAGS += -I$(GEN)

# CUDA sources: one .cu per op family; an nvcc error fails the build (and CI)
$(BUILD)/core/%.cu.o: core/%.cu $(wildcard core/include/lunar/*.h core/cuda/*.h core/ops/cuda/*.cuh) $(BUILD_CONFIG) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

# the communicator: comm_mpi.c with MPI (-DLUNAR_USE_MPI), else comm_single.c
$(BUILD)/core/comm/%.o: core/comm/%.c core/comm/internal.h $(wildcard core/include/lunar/*.h) $(BUILD_CONFIG) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(HOST_CC) $(CFLAGS) $(HOST_DEFS) -c $< -o $@

$(BUILD)/bindings/%.o: bindings/%.c $(wildcard bindings/*.h core/include/lunar/*.h) $(BUILD_CONFIG) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(HOST_CC) $(CFLAGS) $(HOST_DEFS) -c $< -o $@

$(LIB): $(CORE_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/lunar: $(BIND_OBJ) $(LIB)
	$(HOST_CC) $(BIND_OBJ) $(LIB) -o $@ $(LDLIBS)

# liblunar holds MPI calls in an MPI build: everything linking it uses $(HOST_CC)
$(BUILD)/tests/%: tests/c/%.c $(wildcard tests/c/*.h) $(LIB)
	@mkdir -p $(dir $@)
	$(HOST_CC) $(CFLAGS) $(HOST_DEFS) $< $(LIB) -o $@ $(LDLIBS)

# A single-rank host from the same objects, comm_single.c in place of comm_mpi.c
# (the bindings make no MPI call), for tests/fail/test_single_rank.sh: a
# single-rank build started by mpirun must refuse to run.
SINGLE_HOST := $(BUILD)/tests/lunar-single
$(BUILD)/single/%.o: core/comm/%.c core/comm/internal.h $(wildcard core/include/lunar/*.h) $(BUILD_CONFIG) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(SINGLE_HOST): $(BIND_OBJ) $(BUILD)/single/comm_single.o $(BUILD)/single/comm_common.o $(LIB)
	@mkdir -p $(dir $@)
	$(HOST_CC) $^ -o $@ $(LDLIBS)

$(BUILD)/bench/comm_bench: bench/comm_bench.c $(LIB)
	@mkdir -p $(dir $@)
	@if [ -z "$(HOST_DEFS)" ]; then echo "comm_bench needs MPI (mpicc)"; exit 1; fi
	$(HOST_CC) $(CFLAGS) $(HOST_DEFS) $< $(LIB) -o $@ $(LDLIBS)

# --- fuzzing (fuzz/README.md) ---------------------------------------------------------
# The readers' parse-from-memory entry points under libFuzzer: clang with
# -fsanitize=fuzzer,address,undefined, the core files they need compiled again
# into $(BUILD)/fuzz (no MPI, CUDA or OpenMP). `make fuzz` runs each target for
# FUZZ_SECONDS, one after another, growing $(BUILD)/fuzz/corpus/<target> from
# the seeds fuzz/gen_corpus.c writes to $(FUZZ_SEEDS)/<target>; crashes land in
# $(BUILD)/fuzz/artifacts/<target>/. `make test` builds the same targets with
# $(CC) (and ASan/UBSan when it has them) around fuzz/replay_main.c and replays
# the generated seeds and regressions (tests/fail/test_fuzz_corpus.sh).
FUZZ_TARGETS := safetensors idx cifar image
FUZZ_CORE_SRC := core/status.c core/alloc.c core/rng.c core/tensor.c core/cuda/cuda_none.c \
                 core/io/safetensors.c core/io/fs.c core/data/idx.c core/data/cifar.c core/data/dataset.c \
                 core/data/loader.c core/data/image_decode.c
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_MAX_LEN ?= 65536
FUZZ_ARGS ?=
FUZZ_DIR := $(BUILD)/fuzz
FUZZ_SEEDS := $(BUILD)/fuzz-seeds
FUZZ_SEEDS_STAMP := $(BUILD)/.fuzz-seeds
FUZZ_PKG_CFLAGS = $(shell pkg-config --cflags libcjson zlib libjpeg libpng 2>/dev/null)
FUZZ_LIBS = $(shell pkg-config --libs libcjson zlib libjpeg libpng 2>/dev/null) -lm -lpthread
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_CFLAGS = -std=c11 -D_GNU_SOURCE -O1 -g -Wall -Wextra -Wno-unused-parameter -Wno-unknown-pragmas $(FUZZ_SAN) \
              -Icore/include -Ifuzz $(FUZZ_PKG_CFLAGS)
FUZZ_HDRS := $(wildcard core/include/lunar/*.h core/*/*.h) fuzz/fuzz_common.h
FUZZ_OBJ := $(patsubst %.c,$(FUZZ_DIR)/%.o,$(FUZZ_CORE_SRC))
FUZZ_BIN := $(patsubst %,$(FUZZ_DIR)/fuzz_%,$(FUZZ_TARGETS))

fuzz-clang:
	@command -v $(FUZZ_CC) >/dev/null || { echo "make fuzz needs clang with libFuzzer ($(FUZZ_CC) not found: apt-get install clang libclang-rt-14-dev)"; exit 1; }

$(FUZZ_DIR)/core/%.o: core/%.c $(FUZZ_HDRS) | fuzz-clang $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_DIR)/fuzz_%: fuzz/fuzz_%.c $(FUZZ_OBJ) $(FUZZ_HDRS) | fuzz-clang
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $< $(FUZZ_OBJ) -o $@ $(FUZZ_LIBS)

fuzz-build: $(FUZZ_BIN)

# one target after another (2 cores: never in parallel), each for FUZZ_SECONDS
fuzz: fuzz-build $(FUZZ_SEEDS_STAMP)
	@set -e; for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_DIR)/corpus/$$t $(FUZZ_DIR)/artifacts/$$t; \
	  dict=; [ -f fuzz/$$t.dict ] && dict=-dict=fuzz/$$t.dict; \
	  echo "== fuzz_$$t for $(FUZZ_SECONDS) s (log: $(FUZZ_DIR)/fuzz_$$t.log)"; \
	  OMP_NUM_THREADS=1 $(abspath $(FUZZ_DIR))/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 \
	    -max_len=$(FUZZ_MAX_LEN) -timeout=10 -print_final_stats=1 $$dict \
	    -artifact_prefix=$(FUZZ_DIR)/artifacts/$$t/ $(FUZZ_ARGS) \
	    $(FUZZ_DIR)/corpus/$$t $(FUZZ_SEEDS)/$$t > $(FUZZ_DIR)/fuzz_$$t.log 2>&1 \
	    || { tail -n 60 $(FUZZ_DIR)/fuzz_$$t.log; echo "fuzz_$$t failed: a crash leaves its input in $(FUZZ_DIR)/artifacts/$$t/"; exit 1; }; \
	  grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)|^#[0-9]+[[:space:]]+DONE' $(FUZZ_DIR)/fuzz_$$t.log || true; \
	done

# The replay build: the same targets with $(CC) and fuzz/replay_main.c.
REPLAY_DIR := $(BUILD)/fuzz-replay
REPLAY_SAN = $(eval REPLAY_SAN := $(shell echo 'int main(void){return 0;}' | \
               $(CC) -fsanitize=address,undefined -x c - -o /dev/null 2>/dev/null && \
               echo -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer))$(REPLAY_SAN)
REPLAY_CFLAGS = -std=c11 -D_GNU_SOURCE -O1 -g -Wall -Wextra -Wno-unused-parameter -Wno-unknown-pragmas $(REPLAY_SAN) \
                -Icore/include -Ifuzz $(FUZZ_PKG_CFLAGS)
REPLAY_OBJ := $(patsubst %.c,$(REPLAY_DIR)/%.o,$(FUZZ_CORE_SRC))
REPLAY_BIN := $(patsubst %,$(REPLAY_DIR)/fuzz_%,$(FUZZ_TARGETS))

$(REPLAY_DIR)/core/%.o: core/%.c $(FUZZ_HDRS) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(REPLAY_CFLAGS) -c $< -o $@

$(REPLAY_DIR)/fuzz_%: fuzz/fuzz_%.c fuzz/replay_main.c $(REPLAY_OBJ) $(FUZZ_HDRS)
	$(CC) $(REPLAY_CFLAGS) $< fuzz/replay_main.c $(REPLAY_OBJ) -o $@ $(FUZZ_LIBS)

fuzz-replay: $(REPLAY_BIN)

# the seeds, $(FUZZ_SEEDS)/<target>/: a few valid tiny files per reader, written
# by Lunar's own writers (fuzz/gen_corpus.c); generated, never committed
$(FUZZ_SEEDS_STAMP): fuzz/gen_corpus.c $(REPLAY_OBJ) $(FUZZ_HDRS)
	$(CC) $(REPLAY_CFLAGS) fuzz/gen_corpus.c $(REPLAY_OBJ) -o $(REPLAY_DIR)/gen_corpus $(FUZZ_LIBS)
	rm -rf $(FUZZ_SEEDS) && $(abspath $(REPLAY_DIR))/gen_corpus $(FUZZ_SEEDS) && touch $@
fuzz-corpus: $(FUZZ_SEEDS_STAMP)
.SECONDARY: $(FUZZ_OBJ) $(REPLAY_OBJ)

# --- run, test, bench ----------------------------------------------------------------
run: $(BUILD)/lunar
	./$(BUILD)/lunar examples/train_with_engine.lua --config configs/vit_fmnist.lua $(ARGS)

# With the CUDA backend, `make test` also runs the CUDA tests on the CPU
# emulation of tests/cuda_emu (suite emu); on a GPU, build/tests/test_cuda and
# tests/lua/test_cuda.lua, test_golden_cuda.lua run on the device itself.
EMU_BUILD := $(if $(USE_CUDA),emu-build)
test: $(BUILD)/lunar $(SINGLE_HOST) $(TEST_C_BIN) $(EMU_BUILD) $(REPLAY_BIN) $(FUZZ_SEEDS_STAMP) san-build
	@BUILD=$(BUILD) LUNAR_TEST_EMU=$(USE_CUDA) bash tests/run_all.sh

# the sanitizer build of the host for tests/fail/test_sanitizer.sh, in
# $(BUILD)-san (make SAN=1 there: compiled once, then up to date)
SAN_BUILD := $(BUILD)-san
san-build: | $(DEPS_STAMP)
	@$(MAKE) -s SAN=1 BUILD=$(SAN_BUILD) lunar

emu-build: | $(DEPS_STAMP)
	@$(MAKE) -s -f tests/cuda_emu/emu.mk BUILD=$(BUILD)

test-cuda-emu: emu-build
	@BUILD=$(BUILD) bash tests/run_all.sh emu

test-c: $(TEST_C_BIN)
	@bash tests/run_all.sh c

test-lua: $(BUILD)/lunar
	@bash tests/run_all.sh lua

test-fail: $(BUILD)/lunar $(SINGLE_HOST) $(REPLAY_BIN) $(FUZZ_SEEDS_STAMP) san-build
	@bash tests/run_all.sh fail

test-mpi: $(BUILD)/lunar $(BUILD)/tests/test_comm
	@bash tests/run_all.sh mpi

bench: $(BUILD)/lunar
	@bash bench/vs_pytorch

bench-build: $(BUILD)/lunar $(BUILD)/bench/comm_bench

clean:
	rm -rf $(BUILD) lunar
