# monoquant — GNU Make build.  `make` builds the libraries and the CLI; `make test` runs
# every test; `make demo` runs the main job on the bundled demo model.
CC       ?= cc
AR       ?= ar
PREFIX   ?= /usr/local
FIXTURES ?= ../shared/fixtures
BUILD    ?= build
PYTHON   ?= /usr/bin/python3
VERSION  := 0.1.0

WARN     := -Wall -Wextra -Werror -Wshadow -Wpointer-arith -Wvla -Wstrict-prototypes
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

# Per-ISA sources are named *_avx2.c / *_avx512.c and compiled with their own flags;
# the library picks a path at run time after checking the CPU and the OS.
AVX2_FLAGS   := -mavx2 -mfma -mf16c
AVX512_FLAGS := -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mavx512bf16 -mfma -mf16c

LIB_SRC  := $(sort $(wildcard src/*/*.c))
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
SHARED := $(BUILD)/libmonoquant.so
CLI    := $(BUILD)/monoquant

.PHONY: all lib test unit demo bench asan fuzz install clean check-deps python
all: $(STATIC) $(SHARED) $(CLI) $(EXAMPLE_BIN)
lib: $(STATIC) $(SHARED)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(ALLCFLAGS) $(if $(findstring _avx512,$<),$(AVX512_FLAGS),$(if $(findstring _avx2,$<),$(AVX2_FLAGS))) -MMD -MP -c $< -o $@

$(STATIC): $(LIB_OBJ)
	@rm -f $@
	@$(if $(Q),echo "  AR      $@")
	$(Q)$(AR) rcs $@ $^

$(SHARED): $(LIB_OBJ)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) -shared -Wl,-soname,libmonoquant.so.0 -o $@ $^ $(LDLIBS)

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

unit: $(UNIT_BIN) $(REPLAY_BIN)

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
test: all unit
	@BUILD=$(BUILD) FIXTURES=$(FIXTURES) PYTHON=$(PYTHON) sh tests/run_tests.sh

DEMO_MODEL := $(BUILD)/demo/demo_model.safetensors
$(DEMO_MODEL): $(BUILD)/examples/make_demo_model
	@mkdir -p $(dir $@)
	$(BUILD)/examples/make_demo_model $@

demo: all $(DEMO_MODEL)
	@sh examples/demo.sh $(CLI) $(DEMO_MODEL)

bench: $(BENCH_BIN) $(CLI)
	@for b in $(BENCH_BIN); do echo "== $$b"; $$b || exit 1; done

# Tests under AddressSanitizer + UndefinedBehaviorSanitizer (separate build folder).
asan:
	$(MAKE) BUILD=build-asan CC=clang \
	  CFLAGS="-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" \
	  test

# libFuzzer targets, each run for FUZZ_SECONDS; crashers go to tests/corpus/<target>/.
FUZZ_SECONDS ?= 30
FUZZ_FLAGS := -std=c11 -D_GNU_SOURCE -O1 -g -Iinclude -Isrc -fsanitize=fuzzer,address,undefined
fuzz:
	@mkdir -p $(BUILD)/fuzz
	@for f in $(FUZZ_SRC); do \
	  n=$$(basename $$f .c | sed 's/^fuzz_//'); \
	  echo "== fuzz $$n ($(FUZZ_SECONDS) s)"; \
	  clang $(FUZZ_FLAGS) -o $(BUILD)/fuzz/$$n $$f $(LIB_SRC) -lm -lpthread $(AVX512_FLAGS) || exit 1; \
	  mkdir -p $(BUILD)/fuzz/work-$$n tests/corpus/$$n; \
	  $(BUILD)/fuzz/$$n -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=tests/corpus/$$n/crash- \
	    $(BUILD)/fuzz/work-$$n tests/corpus/$$n || exit 1; \
	done

install: all
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/bin \
	  $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 $(STATIC) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(SHARED) $(DESTDIR)$(PREFIX)/lib/libmonoquant.so.0
	ln -sf libmonoquant.so.0 $(DESTDIR)$(PREFIX)/lib/libmonoquant.so
	install -m 644 include/monoquant.h $(DESTDIR)$(PREFIX)/include/
	install -m 755 $(CLI) $(DESTDIR)$(PREFIX)/bin/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' monoquant.pc.in \
	  > $(DESTDIR)$(PREFIX)/lib/pkgconfig/monoquant.pc

clean:
	rm -rf build build-asan

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d)
