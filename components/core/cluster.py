"""Whether a Dask scheduler can take a job before the job starts: reachable, with workers, whose
workers see the job's files at the same paths and run the same versions as this machine.

Without the check, workers on other machines that cannot see the input, the downloaded model or the
output folder fail late and obscurely (a FileNotFoundError deep in a task, or a hang).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import sys
import tempfile
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.core.errors import UserError

PROJECT_DISTRIBUTION = "mlops-ct"
# Pickled models and search trials load only with the scikit-learn (and Python) that wrote them.
MATCHED_DISTRIBUTIONS = (PROJECT_DISTRIBUTION, "scikit-learn")
CHECK_SECONDS = 10.0
SHARED = (
    "Dask workers must see the workspace (MLOPS_HOME) and the job's input and output folders at the same paths "
    f"as this machine, and run the same Python, {PROJECT_DISTRIBUTION} and scikit-learn versions"
)


class ClusterError(UserError, RuntimeError):
    """A Dask scheduler that cannot take the job: unreachable, without workers, or with workers that
    lack a path or run other versions."""


@dataclass(frozen=True)
class ClusterInfo:
    """A checked scheduler: its workers' addresses and their threads in all."""

    address: str
    workers: tuple[str, ...]
    threads: int


def installed_versions() -> dict[str, str]:
    """The versions every worker must share with this machine (Python as major.minor)."""
    found = {"Python": f"{sys.version_info.major}.{sys.version_info.minor}"}
    for name in MATCHED_DISTRIBUTIONS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def _where(path: Path) -> str:
    return "" if path.is_absolute() else f", relative to the worker's folder {os.getcwd()}"


def _read_problem(path: Path) -> str | None:
    """Why this process cannot read a file or list a folder, or None when it can."""
    try:
        if path.is_dir():
            with os.scandir(path) as entries:
                next(entries, None)
        else:
            with path.open("rb") as file:
                file.read(1)
    except FileNotFoundError:
        return f"cannot read {path}: not found{_where(path)}"
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    return None


def _write_problem(folder: Path) -> str | None:
    """Why this process cannot create a file in a folder (one is created and deleted), or None."""
    if not folder.is_dir():
        return f"cannot write in {folder}: no such folder{_where(folder)}"
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".mlops-probe-"):
            pass
    except OSError as exc:
        return f"cannot write in {folder}: {exc.strerror or exc}"
    return None


def probe_worker(read: Iterable[str], write: Iterable[str], expected: Mapping[str, str]) -> list[str]:
    """What this process (a Dask worker) lacks for the job: paths it cannot read or write, versions
    other than `expected`. Runs on each worker; importing this module there proves the project is installed."""
    problems = [p for p in (_read_problem(Path(path)) for path in read) if p]
    problems += [p for p in (_write_problem(Path(folder)) for folder in write) if p]
    mine = installed_versions()
    problems += [
        f"{name} {mine.get(name, 'not installed')} (here {version})"
        for name, version in expected.items()
        if mine.get(name) != version
    ]
    return problems


def _failed(exc: BaseException) -> str:
    """A worker where the probe did not run: most often one without this project installed."""
    # A worker that cannot unpickle the probe answers a plain Exception that wraps the import error.
    detail = str(exc) if type(exc) is Exception else f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ImportError) or detail.startswith(("ModuleNotFoundError", "ImportError")):
        return f"cannot import this project's code ({detail}): install {PROJECT_DISTRIBUTION} there"
    return f"the check failed there ({detail})"


def _problems_message(address: str, problems: Mapping[str, list[str]]) -> str:
    """One line per worker with what it lacks, then what workers need."""
    lines = [f"the Dask workers of {address} cannot take this job:"]
    lines += [f"  worker {worker}: {'; '.join(found)}" for worker, found in sorted(problems.items())]
    return "\n".join([*lines, SHARED + "."])


async def _ask_workers(
    address: str, read: list[str], write: list[str], timeout: float
) -> tuple[dict[str, Any], dict[str, int]]:
    """Each worker's answer to `probe_worker` (or the exception it raised) and its threads."""
    from distributed import Client

    # An asynchronous client on a loop of our own: a synchronous one that fails to connect leaves
    # its loop thread behind, and its finaliser prints a traceback when the process exits.
    # (Any: distributed types the asynchronous client's methods as the synchronous ones.)
    client: Any = Client(address, asynchronous=True, timeout=timeout, set_as_default=False)
    try:
        try:
            await client
        except (OSError, ValueError) as exc:
            raise ClusterError(
                f"cannot reach the Dask scheduler at {address} ({exc}): check the address (tcp://host:8786), "
                "that a scheduler runs there (`dask scheduler`) and that this machine can reach its port"
            ) from exc
        try:
            await client.wait_for_workers(1, timeout=timeout)
        except TimeoutError as exc:
            raise ClusterError(
                f"the Dask scheduler at {address} has no workers (none joined within {timeout:g} s): start them "
                f"with `dask worker {address}`; {SHARED}"
            ) from exc
        answers = await client.run(probe_worker, read, write, installed_versions(), on_error="return")
        return answers, await client.nthreads()
    finally:
        await client.close()


def check_cluster(
    address: str, *, read: Iterable[Path | str] = (), write: Iterable[Path | str] = (), timeout: float = CHECK_SECONDS
) -> ClusterInfo:
    """Connect to the scheduler at `address` (within `timeout` seconds), wait as long for a worker,
    and have every worker read each `read` path (a file or a folder), create a file in each `write`
    folder and compare its versions with this machine's; raise `ClusterError` naming each failure."""
    asked = _ask_workers(address, [str(p) for p in read], [str(p) for p in write], timeout)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dask-check") as pool:  # callers may run a loop
        answers, threads = pool.submit(asyncio.run, asked).result()
    problems = {
        worker: [_failed(answer)] if isinstance(answer, BaseException) else answer for worker, answer in answers.items()
    }
    failing = {worker: found for worker, found in problems.items() if found}
    if failing:
        raise ClusterError(_problems_message(address, failing))
    return ClusterInfo(address, tuple(sorted(answers)), sum(threads.get(worker, 0) for worker in answers))
