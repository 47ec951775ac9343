#!/bin/sh
# What `make test` needs beyond a C compiler, on Debian: PyTorch, NumPy and scikit-learn for
# the interop tests, OpenBLAS's threaded build and the fortunes text for the model-level
# checks. Installs the missing packages when run as root; otherwise fails with the command to
# run. `--asan` also requires clang (`make asan`, `make fuzz`). Used by `make test` and .ci/run.
set -eu
PYTHON=${PYTHON:-/usr/bin/python3}
need=""
command -v cc >/dev/null 2>&1 || need="$need gcc"
command -v make >/dev/null 2>&1 || need="$need make"
if [ "${1:-}" = --asan ] && ! command -v clang >/dev/null 2>&1; then need="$need clang"; fi
if ! "$PYTHON" -c 'import torch, numpy, sklearn' 2>/dev/null; then
    if [ "$PYTHON" != /usr/bin/python3 ]; then
        echo "make test: $PYTHON cannot import torch, numpy and sklearn (PYTHON=/usr/bin/python3" \
             "uses Debian's packages)" >&2
        exit 1
    fi
    need="$need python3-torch python3-numpy python3-sklearn"
fi
[ -e /usr/lib/x86_64-linux-gnu/openblas-pthread ] || need="$need libopenblas0-pthread"
[ -e /usr/share/games/fortunes/fortunes ] || need="$need fortunes" # calibration text
[ -z "$need" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "make test: missing:$need. Install as root, then rerun:" >&2
    echo "  apt-get update && apt-get install -y --no-install-recommends$need" >&2
    exit 1
fi
echo "installing:$need"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086 # one word per package
apt-get install -y -qq --no-install-recommends $need >/dev/null
