"""Shared helpers for interop tests (run under /usr/bin/python3 with Debian's torch).

Each test prints "ok NAME" / "not ok NAME: why" lines, as the C tests do."""
import os
import subprocess
import sys
import tempfile
import traceback

MQ = os.environ.get("MQ", os.path.abspath("build/monoquant"))
FIXTURES = os.environ.get("FIXTURES", "../shared/fixtures")
TMP = tempfile.mkdtemp(dir=os.environ.get("TEST_TMPDIR") or None)
_failed = 0


def ok(name):
    print(f"ok {name}", flush=True)


def fail(name, why):
    global _failed
    _failed += 1
    print(f"not ok {name}: {why}", flush=True)


def check(name, cond, why=""):
    ok(name) if cond else fail(name, why or "condition false")


def case(fn):
    """Decorator: runs fn() now; an exception is a failure named after fn."""
    try:
        r = fn()
        if r is not False:
            ok(fn.__name__)
        else:
            fail(fn.__name__, "returned False")
    except Exception as e:  # noqa: BLE001 - report every failure as a test line
        fail(fn.__name__, f"{type(e).__name__}: {e} | " +
             traceback.format_exc().strip().splitlines()[-2].strip())
    return fn


def mq(*args, check_rc=0):
    """Runs the CLI; returns (rc, stdout, stderr). Raises if rc != check_rc (None: any)."""
    # the CLI carries its own sanitizer runtime: drop the one preloaded for Python under make asan
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    p = subprocess.run([MQ, *map(str, args)], capture_output=True, text=True, env=env)
    if check_rc is not None and p.returncode != check_rc:
        raise RuntimeError(f"monoquant {' '.join(map(str, args))} -> {p.returncode}: {p.stderr[-500:]}")
    return p.returncode, p.stdout, p.stderr


def finish():
    sys.exit(1 if _failed else 0)
