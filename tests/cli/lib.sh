# Sourced by tests/cli/*.sh. Provides:
#   $MQ (the CLI), $T (a scratch folder), $FIXTURES
#   ok NAME / notok NAME WHY
#   expect_exit CODE NAME -- CMD...   runs CMD (stdout+stderr to $T/out), checks its exit code
#   expect_out NAME PATTERN           the last expect_exit output matches the grep -E pattern
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/cli.XXXXXX")
MQ=${MQ:-$(pwd)/build/monoquant}
FIXTURES=${FIXTURES:-../shared/fixtures}
fails=0
ok() { echo "ok $1"; }
notok() { echo "not ok $1: $2"; fails=$((fails + 1)); }
expect_exit() {
    want=$1; name=$2; shift 3
    "$@" > "$T/out" 2>&1
    got=$?
    if [ "$got" -eq "$want" ]; then ok "$name"
    else notok "$name" "exit $got, expected $want: $(head -c 300 "$T/out" | tr '\n' ' ')"; fi
}
expect_out() {
    if grep -Eq -- "$2" "$T/out"; then ok "$1"
    else notok "$1" "output lacks /$2/: $(head -c 300 "$T/out" | tr '\n' ' ')"; fi
}
finish() { rm -rf "$T"; [ "$fails" -eq 0 ]; }
