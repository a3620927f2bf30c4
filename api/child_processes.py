"""Child processes that do not outlive the process that started them."""

import os
import signal
import sys
import threading
from collections.abc import Callable


def die_with_parent() -> Callable[[], None] | None:
    """On Linux, a `preexec_fn` hook: the child gets SIGTERM when its parent dies, even by SIGKILL, so
    no API process or worker is left serving (or holding a port and database connections) after its
    supervisor is gone."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died between fork and prctl
            os.kill(os.getpid(), signal.SIGTERM)

    return hook
