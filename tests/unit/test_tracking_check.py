"""`registry.check_store`: a tracking store that cannot be used is named at start, quickly."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from components.core.workspace import Workspace
from components.tracking.registry import TrackingUnreachable, check_store


@pytest.fixture
def answering(request: pytest.FixtureRequest) -> Iterator[str]:
    """A local HTTP server answering every request with the status given as the test's parameter."""
    status = request.param

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.end_headers()
            self.wfile.write(b'{"error_code": "INTERNAL_ERROR", "message": "database is down"}')

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_workspace_store_needs_no_check(tmp_path: Path) -> None:
    check_store(Workspace.at(tmp_path / "ws"))


def test_a_server_that_does_not_answer_is_named(tmp_path: Path, monkeypatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://user:pw@127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(TrackingUnreachable, match=rf"server at http://user:\*\*\*@127.0.0.1:{port} does not answer"):
        check_store(Workspace.at(tmp_path / "ws"))
    assert time.monotonic() - started < 15


@pytest.mark.parametrize("answering", [500], indirect=True)
def test_a_server_whose_database_fails_is_named(answering: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", answering)
    with pytest.raises(TrackingUnreachable, match="answers but fails \\(HTTP 500\\); its backend database may be down"):
        check_store(Workspace.at(tmp_path / "ws"))


@pytest.mark.parametrize("answering", [401], indirect=True)
def test_refused_credentials_name_the_variables(answering: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", answering)
    with pytest.raises(TrackingUnreachable, match="MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"):
        check_store(Workspace.at(tmp_path / "ws"))


@pytest.mark.parametrize("answering", [200], indirect=True)
def test_a_server_that_answers_passes(answering: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", answering)
    check_store(Workspace.at(tmp_path / "ws"))


def test_a_database_that_cannot_be_opened_is_named(tmp_path: Path, monkeypatch) -> None:
    uri = f"sqlite:///{tmp_path}/missing-folder/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(TrackingUnreachable, match=f"the tracking database at {uri} is unreachable"):
        check_store(Workspace.at(tmp_path / "ws"))
