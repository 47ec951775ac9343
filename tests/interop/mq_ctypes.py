# Former name of the checkpoint bindings, kept for tests that still import it: use mqlib.
from mqlib import *  # noqa: F401,F403
