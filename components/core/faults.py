"""Named crash points for fault-injection tests.

`fault_point("registered")` does nothing unless the environment variable `MLOPS_FAULT_AT` names
that point, when it kills its own process with SIGKILL: no handler, no cleanup, no flush, as a
power cut or the kernel's OOM killer would. The tests kill real `mlops` processes at every point
of a run this way, then check that the next command succeeds and nothing is lost or doubled.
"""

from __future__ import annotations

import os
import signal

FAULT_VARIABLE = "MLOPS_FAULT_AT"


def fault_point(name: str) -> None:
    if os.environ.get(FAULT_VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)
