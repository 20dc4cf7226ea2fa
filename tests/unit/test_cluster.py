"""The Dask scheduler check on real in-process clusters: workers, paths, versions, unreachable addresses."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from distributed import LocalCluster

from components.core.cluster import ClusterError, check_cluster, installed_versions, probe_worker
from components.core.errors import UserError


def _local_cluster(workers: int) -> LocalCluster:
    """Workers as threads of this process; no dashboard, and the scheduler's HTTP routes on a free port."""
    return LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=False,
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": ":0"},
    )


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with _local_cluster(2) as running:
        yield running


def _workers(cluster: LocalCluster) -> list[str]:
    return sorted(worker.address for worker in cluster.workers.values())


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_cluster_whose_workers_see_the_paths_is_described(cluster: LocalCluster, tmp_path: Path) -> None:
    data = tmp_path / "input.csv"
    data.write_text("a\n1\n")
    (tmp_path / "model").mkdir()
    info = check_cluster(cluster.scheduler_address, read=(data, tmp_path / "model"), write=(tmp_path,))
    assert info.address == cluster.scheduler_address
    assert list(info.workers) == _workers(cluster) and info.threads == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.csv", "model"]  # the probe's file is gone


def test_a_path_the_workers_cannot_read_is_named_for_each_worker(cluster: LocalCluster, tmp_path: Path) -> None:
    missing = tmp_path / "absent.parquet"
    with pytest.raises(ClusterError) as caught:
        check_cluster(cluster.scheduler_address, read=(missing,))
    message = str(caught.value)
    assert f"cannot read {missing}: not found" in message
    assert all(f"worker {worker}: cannot read" in message for worker in _workers(cluster))
    assert "MLOPS_HOME" in message and "same paths" in message


def test_a_folder_the_workers_cannot_write_in_is_named(cluster: LocalCluster, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.geteuid() == 0:  # root writes through the mode bits: a folder that is not there instead
            locked = tmp_path / "absent" / "out"
        with pytest.raises(ClusterError) as caught:
            check_cluster(cluster.scheduler_address, write=(locked,))
    finally:
        (tmp_path / "locked").chmod(0o700)
    message = str(caught.value)
    assert f"cannot write in {locked}" in message
    assert all(f"worker {worker}:" in message for worker in _workers(cluster))


# Run in each worker process before it takes work: the project cannot be imported there.
WITHOUT_THE_PROJECT = """
import sys

class HideTheProject:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "components":
            raise ModuleNotFoundError(f"No module named {name!r}")

sys.meta_path.insert(0, HideTheProject())
"""


def test_a_worker_without_the_project_is_named() -> None:
    with LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": ":0"},
        preload=[WITHOUT_THE_PROJECT],
    ) as bare:
        (worker,) = bare.scheduler_info["workers"]
        with pytest.raises(ClusterError) as caught:
            check_cluster(bare.scheduler_address)
    message = str(caught.value)
    assert f"worker {worker}: cannot import this project's code" in message
    assert "No module named 'components'" in message and "install mlops-ct there" in message


def test_an_unreachable_scheduler_is_named_within_the_timeout() -> None:
    address = f"tcp://127.0.0.1:{_closed_port()}"
    started = time.perf_counter()
    with pytest.raises(ClusterError) as caught:
        check_cluster(address, timeout=1)
    assert time.perf_counter() - started < 5
    assert isinstance(caught.value, UserError) and caught.value.exit_status == 1
    assert f"cannot reach the Dask scheduler at {address}" in str(caught.value)
    assert "check the address" in str(caught.value)


def test_a_malformed_address_is_refused_as_unreachable() -> None:
    with pytest.raises(ClusterError, match="cannot reach the Dask scheduler at scheduler-without-port"):
        check_cluster("scheduler-without-port", timeout=1)


def test_a_scheduler_without_workers_is_refused() -> None:
    with _local_cluster(0) as empty, pytest.raises(ClusterError) as caught:
        check_cluster(empty.scheduler_address, timeout=0.5)
    message = str(caught.value)
    assert f"the Dask scheduler at {empty.scheduler_address} has no workers" in message
    assert f"dask worker {empty.scheduler_address}" in message


def test_the_probe_reports_other_versions_and_relative_paths(tmp_path: Path) -> None:
    here = installed_versions()
    assert set(here) == {"Python", "mlops-ct", "scikit-learn"} and "not installed" not in here.values()
    assert probe_worker([str(tmp_path)], [str(tmp_path)], here) == []
    older = {**here, "scikit-learn": "0.0"}
    assert probe_worker([], [], older) == [f"scikit-learn {here['scikit-learn']} (here 0.0)"]
    (relative,) = probe_worker(["no-such-input.csv"], [], here)
    assert relative == f"cannot read no-such-input.csv: not found, relative to the worker's folder {os.getcwd()}"


def test_the_search_checks_its_scheduler_before_any_trial() -> None:
    from flows.training import _spread_on_dask

    plan = SimpleNamespace(search=SimpleNamespace(dask_address="scheduler-without-port"))

    def choose(*_: object) -> None:
        pytest.fail("no trial may start on a scheduler that failed its check")

    with pytest.raises(ClusterError, match="cannot reach the Dask scheduler at scheduler-without-port"):
        _spread_on_dask(plan, choose, None, None, "roc_auc", 7, None)
