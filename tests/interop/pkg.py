"""Imports the Python package `monoquant` from the source tree (python/) over
$BUILD/libmonoquant.so, after mqlib (which re-executes under a sanitizer build)."""
import os
import sys

import mqlib  # noqa: F401  (loads the library first; ASan re-exec)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "python"))
os.environ.setdefault("MONOQUANT_LIBRARY", mqlib.LIB._name)
import monoquant  # noqa: E402

__all__ = ["monoquant"]
