# monoquant — GNU Make build.  `make` builds the libraries and the CLI; `make test` runs
# every test; `make demo` runs the main job on the bundled demo model.
CC       ?= cc
AR       ?= ar
PREFIX   ?= /usr/local
FIXTURES ?= ../shared/fixtures
BUILD    ?= build
PYTHON   ?= /usr/bin/python3
# The version is written once, in include/monoquant.h (MQ_VERSION_MAJOR/MINOR/PATCH).
version_part = $(shell sed -n 's/^\#define MQ_VERSION_$(1) \([0-9]*\)$$/\1/p' include/monoquant.h)
VERSION_MAJOR := $(call version_part,MAJOR)
VERSION  := $(VERSION_MAJOR).$(call version_part,MINOR).$(call version_part,PATCH)

# Warnings are errors in our CI and `make asan` (WERROR=1); a user's build with a newer
# compiler only reports them.
WARN     := -Wall -Wextra -Wshadow -Wpointer-arith -Wvla -Wstrict-prototypes \
            -Wmissing-prototypes -Wformat=2 $(if $(filter 1,$(WERROR)),-Werror)
CFLAGS   ?= -O2 -g
# The CLI, tests of the public API and examples see only include/; library sources and unit
# tests of internals also see src/.
ALLCFLAGS = -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) -fPIC -fvisibility=hidden \
            -Iinclude $(if $(filter cli/% examples/%,$<),,-Isrc) $(EXTRA_CFLAGS)
LDLIBS   := -lm -lpthread
# `make V=1` shows the full commands.
ifeq ($(V),1)
Q :=
else
Q := @
endif

# Per-ISA sources are named *_avx2.c / *_avx512.c (x86 only) and *_neon.c / *_dotprod.c
# (ARM64 only) and compiled with their own flags; the library picks a path at run time after
# checking the CPU and the OS, with one feature gate per level that checks exactly these
# extensions (src/common/cpu.c). NEON is in the ARM64 baseline: no flags.
AVX2_FLAGS    := -mavx2 -mfma -mf16c
AVX512_FLAGS  := -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mfma -mf16c
DOTPROD_FLAGS := -march=armv8.2-a+dotprod
# *_vbmi2_avx512.c: entries of the AVX-512 level called only when the CPU also has VBMI2
isa_flags = $(if $(findstring _vbmi2_avx512,$1),$(AVX512_FLAGS) -mavx512vbmi2,$(if $(findstring _avx512,$1),$(AVX512_FLAGS),$(if $(findstring _avx2,$1),$(AVX2_FLAGS),$(if $(findstring _dotprod,$1),$(DOTPROD_FLAGS)))))
TARGET_ARCH_NAME := $(shell $(CC) -dumpmachine 2>/dev/null)
IS_X86 := $(filter x86_64% i386% i486% i586% i686%,$(TARGET_ARCH_NAME))
IS_ARM64 := $(filter aarch64%,$(TARGET_ARCH_NAME))

LIB_SRC  := $(sort $(wildcard src/*/*.c))
ifeq ($(IS_X86),)
LIB_SRC  := $(filter-out %_avx2.c %_avx512.c,$(LIB_SRC))
endif
ifeq ($(IS_ARM64),)
LIB_SRC  := $(filter-out %_neon.c %_dotprod.c,$(LIB_SRC))
endif
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_SRC  := $(sort $(wildcard cli/*.c))
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
FUZZ_SRC := $(sort $(wildcard tests/fuzz/fuzz_*.c))
REPLAY_BIN := $(FUZZ_SRC:tests/fuzz/fuzz_%.c=$(BUILD)/tests/replay_%)
BENCH_SRC := $(sort $(wildcard bench/bench_*.c))
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)
EXAMPLE_SRC := $(sort $(wildcard examples/*.c))
EXAMPLE_BIN := $(EXAMPLE_SRC:examples/%.c=$(BUILD)/examples/%)

STATIC := $(BUILD)/libmonoquant.a
# Shared library names: the soname changes with the major version only (ABI policy in
# include/monoquant.h); the real name carries the full version.
SONAME   := libmonoquant.so.$(VERSION_MAJOR)
REALNAME := libmonoquant.so.$(VERSION)
SHARED := $(BUILD)/$(REALNAME)
CLI    := $(BUILD)/monoquant

.PHONY: all lib test unit demo bench asan fuzz install clean python test-aarch64
all: $(STATIC) $(SHARED) $(CLI) $(EXAMPLE_BIN)
lib: $(STATIC) $(SHARED)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(ALLCFLAGS) $(call isa_flags,$<) -MMD -MP -c $< -o $@

$(STATIC): $(LIB_OBJ)
	@rm -f $@
	@$(if $(Q),echo "  AR      $@")
	$(Q)$(AR) rcs $@ $^

$(SHARED): $(LIB_OBJ)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) -shared -Wl,-soname,$(SONAME) -o $@ $^ $(LDLIBS)
	$(Q)ln -sf $(REALNAME) $(BUILD)/$(SONAME)
	$(Q)ln -sf $(SONAME) $(BUILD)/libmonoquant.so

$(CLI): $(CLI_OBJ) $(STATIC)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) -o $@ $(CLI_OBJ) $(STATIC) $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(wildcard tests/*.h) $(STATIC)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) $(ALLCFLAGS) -Itests -o $@ $< $(STATIC) $(LDLIBS)

$(BUILD)/tests/replay_%: tests/fuzz/fuzz_%.c tests/fuzz/replay_main.c $(STATIC)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) $(ALLCFLAGS) -o $@ $< tests/fuzz/replay_main.c $(STATIC) $(LDLIBS)

$(BUILD)/bench/%: bench/%.c $(STATIC)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) $(ALLCFLAGS) -Ibench -o $@ $< $(STATIC) $(LDLIBS)

$(BUILD)/examples/%: examples/%.c $(STATIC)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) $(ALLCFLAGS) -o $@ $< $(STATIC) $(LDLIBS)

# Fault injection for tests/cli/faults.sh (LD_PRELOAD; no sanitizer flags: it wraps libc).
FAULT_LIB := $(BUILD)/tests/libmqfault.so
$(FAULT_LIB): tests/fault/inject.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) -std=c11 -D_GNU_SOURCE $(WARN) -O1 -g -fPIC -shared -o $@ $< -ldl

unit: $(UNIT_BIN) $(REPLAY_BIN) $(FAULT_LIB)

# The Python package (python/monoquant) installed into a venv that sees the system's torch,
# with this build's library copied inside it: `make python` then `$(PYVENV)/bin/python -c "import monoquant"`.
PYVENV ?= $(BUILD)/venv
python: $(SHARED)
	[ -x $(PYVENV)/bin/python ] || $(PYTHON) -m venv --system-site-packages $(PYVENV)
	$(PYVENV)/bin/python -m pip install -q --no-build-isolation --no-deps --no-index ./python
	rm -rf python/build python/*.egg-info
	cp $(SHARED) "$$($(PYVENV)/bin/python -c 'import importlib.util as u; print(u.find_spec("monoquant").submodule_search_locations[0])')/libmonoquant.so"
	cd / && $(abspath $(PYVENV))/bin/python -c "import monoquant; print('monoquant', monoquant.__version__, 'over', monoquant.library_path)"

# Every test: unit binaries, fuzz-corpus replays, CLI scripts, PyTorch interop and model-level
# checks. The runner ends with one line `N passed, N failed`.
# Missing Debian packages are installed first when run as root (else the command is shown).
test:
	@PYTHON=$(PYTHON) sh tools/test-deps.sh
	@$(MAKE) --no-print-directory all unit
	@BUILD=$(BUILD) FIXTURES=$(FIXTURES) PYTHON=$(PYTHON) sh tests/run_tests.sh

DEMO_MODEL := $(BUILD)/demo/demo_model.safetensors
$(DEMO_MODEL): $(BUILD)/examples/make_demo_model
	@mkdir -p $(dir $@)
	@rm -f $@ # a build product: rebuilt when the generator changes (the generator never replaces a file)
	$(BUILD)/examples/make_demo_model $@

demo: all $(DEMO_MODEL)
	@sh examples/demo.sh $(CLI) $(DEMO_MODEL)

bench: $(BENCH_BIN) $(CLI)
	@for b in $(BENCH_BIN); do echo "== $$b"; $$b || exit 1; done

# Tests under AddressSanitizer + UndefinedBehaviorSanitizer (separate build folder).
asan:
	$(MAKE) BUILD=build-asan CC=clang WERROR=1 \
	  CFLAGS="-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" \
	  test

# aarch64: cross build (its own folder) and the unit and CLI tests under qemu-user; checks that
# it works, not how fast. Debian packages: gcc-aarch64-linux-gnu, libc6-dev-arm64-cross,
# qemu-user. AARCH64_CPU is the emulated CPU: `max` has dot products (every ARM64 level runs);
# `cortex-a53` has not (the library must stop at neon). MQ_ISA=neon caps the level as usual.
AARCH64_PREFIX ?= aarch64-linux-gnu-
AARCH64_CPU    ?= max
test-aarch64:
	$(MAKE) BUILD=build-aarch64 CC=$(AARCH64_PREFIX)gcc AR=$(AARCH64_PREFIX)ar all unit
	@QEMU_LD_PREFIX=/usr/aarch64-linux-gnu EMULATOR="qemu-aarch64 -cpu $(AARCH64_CPU)" \
	  BUILD=build-aarch64 \
	  FIXTURES=$(FIXTURES) PYTHON=$(PYTHON) sh tests/run_tests.sh

# libFuzzer targets under ASan + UBSan (halting on the first report). The library is built
# once in its own folder with the normal per-ISA rules; each target links against it and runs
# for FUZZ_SECONDS (a longer run: `make fuzz FUZZ_SECONDS=3600`, or FUZZ_TARGETS=json to pick
# targets); findings go to tests/corpus/<target>/, which `make test` replays.
FUZZ_SECONDS ?= 30
FUZZ_TARGETS ?= $(FUZZ_SRC:tests/fuzz/fuzz_%.c=%)
FUZZ_BUILD   := build-fuzz
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
fuzz:
	$(MAKE) BUILD=$(FUZZ_BUILD) CC=clang CFLAGS="-O1 -g $(FUZZ_SAN) -fsanitize=fuzzer-no-link" \
	  $(FUZZ_BUILD)/libmonoquant.a
	@for n in $(FUZZ_TARGETS); do \
	  echo "== fuzz $$n ($(FUZZ_SECONDS) s)"; \
	  clang -std=c11 -D_GNU_SOURCE -O1 -g -Iinclude -Isrc $(FUZZ_SAN) -fsanitize=fuzzer \
	    -o $(FUZZ_BUILD)/fuzz_$$n tests/fuzz/fuzz_$$n.c $(FUZZ_BUILD)/libmonoquant.a \
	    -lm -lpthread || exit 1; \
	  mkdir -p $(FUZZ_BUILD)/work-$$n tests/corpus/$$n; \
	  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  $(FUZZ_BUILD)/fuzz_$$n -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    -artifact_prefix=tests/corpus/$$n/ $(FUZZ_BUILD)/work-$$n tests/corpus/$$n \
	    || exit 1; \
	done

install: all
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/bin \
	  $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 $(STATIC) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(SHARED) $(DESTDIR)$(PREFIX)/lib/$(REALNAME)
	ln -sf $(REALNAME) $(DESTDIR)$(PREFIX)/lib/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(PREFIX)/lib/libmonoquant.so
	install -m 644 include/monoquant.h $(DESTDIR)$(PREFIX)/include/
	install -m 755 $(CLI) $(DESTDIR)$(PREFIX)/bin/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' monoquant.pc.in \
	  > $(DESTDIR)$(PREFIX)/lib/pkgconfig/monoquant.pc

clean:
	rm -rf build build-asan build-fuzz build-aarch64

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d)
