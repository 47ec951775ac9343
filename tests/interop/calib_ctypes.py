# Former name of the observer bindings, kept for tests that still import it: use mqlib.
from mqlib import *  # noqa: F401,F403
