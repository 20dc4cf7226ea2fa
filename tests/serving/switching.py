"""A promotion under live traffic, shared by the in-process and the real-server tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Switch:
    """What the traffic saw while `champion` moved to `new_version` and back."""

    new_version: str
    statuses: list[int] = field(default_factory=list)
    versions: set[str] = field(default_factory=set)


def promote_under_traffic(
    home: Path,
    name: str,
    predict: Callable[[], Any],
    served_version: Callable[[], str | None],
    timeout: float = 60,
) -> Switch:
    """Register a copy of the champion and promote it while `predict()` keeps sending requests;
    wait until `served_version()` reports it, roll back, and wait until the old one is back."""
    from components.core.workspace import Workspace
    from components.tracking import registry

    client = registry.connect(Workspace.at(home))
    champion = registry.get_champion(client, name)
    assert champion is not None
    switch = Switch(registry.register_model(champion.source, name))
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            response = predict()
            switch.statuses.append(response.status_code)
            if response.status_code == 200:
                switch.versions.add(response.json()["model_version"])

    def wait_for(version: str) -> None:
        deadline = time.monotonic() + timeout
        while served_version() != version:
            assert time.monotonic() < deadline, f"the service did not switch to v{version}"
            time.sleep(0.2)

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        time.sleep(0.5)
        registry.set_champion(client, name, switch.new_version, {"promoted_by": "test"})
        wait_for(switch.new_version)
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join()
        registry.rollback(client, name, "test over")
    wait_for(champion.version)
    return switch
