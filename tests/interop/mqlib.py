"""Loads libmonoquant.so from $BUILD for ctypes-based interop tests. A sanitizer build
(`make asan`) needs the ASan runtime loaded first: the test then re-executes itself once with
it preloaded, so the library runs under the sanitizers too."""
import ctypes
import os
import subprocess
import sys


def load():
    path = os.path.join(os.environ.get("BUILD", "build"), "libmonoquant.so")
    try:
        return ctypes.CDLL(path)
    except OSError as e:
        if "__asan" not in str(e) or os.environ.get("MQ_ASAN_REEXEC"):
            raise
    rt = subprocess.run(["clang", "-print-file-name=libclang_rt.asan-x86_64.so"],
                        capture_output=True, text=True, check=True).stdout.strip()
    env = dict(os.environ, LD_PRELOAD=rt, MQ_ASAN_REEXEC="1",
               ASAN_OPTIONS="detect_leaks=0:" + os.environ.get("ASAN_OPTIONS", ""))
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable] + sys.argv, env)
