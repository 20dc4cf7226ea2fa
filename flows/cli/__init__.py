"""`mlops`: the front door for every job, one module per command group.

Heavy libraries (prefect, mlflow, great_expectations, bentoml) are imported inside the
commands that need them, after the environment (telemetry, workspace, Prefect API) is set.
Importing the package registers every command on `app`, in the order `mlops --help` lists them.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys

from flows.cli import (
    deploy,
    expectations,
    labels,
    monitor,
    release,
    score,
    serve,
    server,
    settings,
    simulation,
    status,
    train,
)
from flows.cli.common import EXIT_ERROR, EXIT_OK, EXIT_REJECTED, EXIT_RETRAIN, app, expectations_app, server_app

__all__ = ["EXIT_ERROR", "EXIT_OK", "EXIT_REJECTED", "EXIT_RETRAIN", "app", "main"]

# Every command, one module per group, in the order `mlops --help` lists them.
app.command()(train.run)
app.command()(train.init)
app.command()(simulation.simulate)
app.command()(status.status)
app.command()(settings.config)
app.command()(train.rollback)
app.command()(release.approve)
app.command()(release.reject)
app.command()(release.history)
app.command()(release.reproduce)
app.command()(serve.serve)
app.command()(serve.build)
app.command()(score.score)
app.command()(monitor.monitor)
app.command("label-queue")(labels.label_queue)
app.command("simulate-ct")(simulation.simulate_ct)
expectations_app.command("init")(expectations.expectations_init)
expectations_app.command("validate")(expectations.expectations_validate)
expectations_app.command("diff")(expectations.expectations_diff)
app.command()(deploy.deploy)
server_app.command("start")(server.server_start)
server_app.command("stop")(server.server_stop)
server_app.command("status")(server.server_status)


_exit_status = EXIT_ERROR


def _skip_interpreter_teardown() -> None:
    """Registered first, so it runs after every other exit handler (Prefect's log and event
    flushes, MLflow's run end, ...): flush what is left and leave without the interpreter's
    teardown, which frees thousands of modules and the data frames one by one (1.5-3 s here)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(_exit_status)


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None or isinstance(exc.code, int):
        return exc.code or EXIT_OK
    print(exc.code, file=sys.stderr)
    return EXIT_ERROR


def main() -> None:
    """The `mlops` script. MLOPS_FULL_TEARDOWN=1 (or running under coverage) exits normally."""
    global _exit_status
    if not os.environ.get("MLOPS_FULL_TEARDOWN") and "coverage" not in sys.modules:
        atexit.register(_skip_interpreter_teardown)
    try:
        app()
        _exit_status = EXIT_OK
    except SystemExit as exc:
        _exit_status = _exit_code(exc)
        raise
    except KeyboardInterrupt:
        _exit_status = 130
        raise
