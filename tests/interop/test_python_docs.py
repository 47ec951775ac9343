"""docs/PYTHON.md: the quick start runs as written (in a scratch folder)."""
import os
import re

from harness import TMP, case, finish
from pkg import monoquant  # noqa: F401  (source-tree package on sys.path)

DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs", "PYTHON.md")


@case
def quick_start_runs():
    text = open(DOC).read()
    block = re.search(r"## Quick start\n\n```python\n(.*?)```", text, re.S).group(1)
    assert len(block.strip().splitlines()) <= 10, "the quick start is longer than 10 lines"
    cwd = os.getcwd()
    os.chdir(TMP)
    try:
        exec(compile(block, "docs/PYTHON.md", "exec"), {})
    finally:
        os.chdir(cwd)
    assert os.path.getsize(os.path.join(TMP, "model.int8.safetensors")) > 0


finish()
