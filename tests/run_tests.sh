#!/bin/sh
# Runs every test and ends with one line "N passed, N failed" (", N skipped" if any).
# Each test program prints "ok NAME", "not ok NAME: why" or "skip NAME: why" lines; a program
# that exits nonzero without printing a failure counts as one failure. Under CI (CI set) a
# skipped test is a failure: CI must run everything.
#   BUILD     build folder (build)
#   FIXTURES  shared fixtures (../shared/fixtures)
#   PYTHON    interpreter with torch for interop tests (/usr/bin/python3)
#   TESTS     optional filter: only programs whose path contains this string
#   EMULATOR  command that runs the test programs and the CLI of a cross build (e.g.
#             qemu-aarch64); the PyTorch interop tests (they load the library into the host's
#             Python) and faults.sh (it preloads a host library) then do not run
BUILD=${BUILD:-build}
FIXTURES=${FIXTURES:-../shared/fixtures}
PYTHON=${PYTHON:-/usr/bin/python3}
export BUILD FIXTURES PYTHON
export MQ=$(cd "$BUILD" && pwd)/monoquant
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
TEST_TMPDIR=$(mktemp -d "${TMPDIR:-/tmp}/mqtest.XXXXXX")
export TEST_TMPDIR
trap 'rm -rf "$TEST_TMPDIR"' EXIT INT TERM
EMU=${EMULATOR:-}
if [ -n "$EMU" ]; then
    printf '#!/bin/sh\nexec %s "%s" "$@"\n' "$EMU" "$MQ" > "$TEST_TMPDIR/monoquant"
    chmod +x "$TEST_TMPDIR/monoquant"
    MQ=$TEST_TMPDIR/monoquant
fi

passed=0; failed=0; skipped=0
log="$TEST_TMPDIR/.log"

run_one() { # name, command...
    name=$1; shift
    case "$name" in *"${TESTS:-}"*) ;; *) return ;; esac
    start=$(date +%s)
    "$@" > "$log" 2>&1
    rc=$?
    secs=$(( $(date +%s) - start ))
    p=$(grep -c '^ok ' "$log"); f=$(grep -c '^not ok ' "$log"); s=$(grep -c '^skip ' "$log")
    grep -E '^(not ok|skip) ' "$log" | sed "s|^|  $name: |"
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "  $name: exited with status $rc without reporting a failure; last lines:"
        tail -n 15 "$log" | sed 's/^/    /'
        f=1
    fi
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
    printf '%-40s %4d passed %3d failed %3d skipped  (%ds)\n' "$name" "$p" "$f" "$s" "$secs"
}

for t in "$BUILD"/tests/test_* "$BUILD"/tests/replay_*; do
    [ -x "$t" ] || continue
    case "$t" in
    *replay_*) n=${t##*/replay_}; run_one "replay/$n" $EMU "$t" "tests/corpus/$n" ;;
    *) run_one "unit/${t##*/}" $EMU "$t" ;;
    esac
done
for t in tests/cli/*.sh; do
    [ -f "$t" ] && [ "${t##*/}" != lib.sh ] || continue
    [ -n "$EMU" ] && [ "${t##*/}" = faults.sh ] && continue
    run_one "cli/${t##*/}" sh "$t"
done
for t in tests/interop/test_*.py; do
    [ -f "$t" ] && [ -z "$EMU" ] || continue
    run_one "interop/${t##*/}" "$PYTHON" "$t"
done

if [ -n "${CI:-}" ] && [ "$skipped" -gt 0 ]; then
    echo "CI: $skipped skipped test(s) count as failures"
    failed=$((failed + skipped)); skipped=0
fi
if [ "$skipped" -gt 0 ]; then
    echo "$passed passed, $failed failed, $skipped skipped"
else
    echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
