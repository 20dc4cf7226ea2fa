"""Smoke- and load-test a prediction server over real HTTP, then stop it.

Starts the command after `--` (`{port}` in it is replaced by a free port) in its own process group,
waits for `GET /readyz`, checks `/healthz` and `/metadata`, sends real rows from the data to
`POST /predict` (a batch, the same rows one by one, a request with a wrong field that must be a
400), then runs `benchmarks/loadgen.py` against `/predict` and fails unless every request was
answered with a 2xx. Writes the results (and the server's log) to `--out`, and a Markdown section
to $GITHUB_STEP_SUMMARY when that is set.

    python .github/scripts/smoke_service.py --data DIR --drop default --drop application_time \\
        -- bentoml serve loan_default:latest --host 127.0.0.1 --port {port}
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
LOADGEN = ROOT / "benchmarks" / "loadgen.py"


class SmokeFailure(AssertionError):
    """The server answered something it should not have."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SmokeFailure(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_rows(data: Path, drop: list[str], limit: int) -> list[dict[str, Any]]:
    """Up to `limit` rows of the data as JSON records (null for missing values), without `drop` columns."""
    files = sorted(data.glob("*.parquet")) if data.is_dir() else [data]
    files = [f for f in files if not f.name.startswith(("_", "."))]
    check(bool(files), f"no Parquet file in {data}")
    frame = pd.read_parquet(files[0]).head(limit)
    frame = frame.drop(columns=[c for c in drop if c in frame.columns])
    return json.loads(frame.to_json(orient="records", double_precision=15))


def _tail(path: Path, lines: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


@contextmanager
def running(command: list[str], log_path: Path, base: str, timeout: float) -> Iterator[subprocess.Popen[bytes]]:
    """The server process, ready (GET /readyz is 200); stopped with its whole process group on exit."""
    log = log_path.open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    print(f"started pid {process.pid}: {' '.join(command)}", flush=True)
    try:
        started = time.monotonic()
        while True:
            if process.poll() is not None:
                raise SmokeFailure(f"the server exited with status {process.returncode}:\n{_tail(log_path)}")
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() - started > timeout:
                raise SmokeFailure(f"not ready after {timeout:.0f} s:\n{_tail(log_path)}")
            time.sleep(0.5)
        print(f"ready after {time.monotonic() - started:.1f} s", flush=True)
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()


def smoke(client: httpx.Client, rows: list[dict[str, Any]], origin: str | None) -> dict[str, Any]:
    """Health, metadata and real predictions; returns what /metadata said."""
    health = client.get("/healthz")
    check(health.status_code == 200, f"/healthz answered {health.status_code}")
    meta = client.get("/metadata")
    check(meta.status_code == 200, f"/metadata answered {meta.status_code}: {meta.text[:500]}")
    metadata = meta.json()
    check(bool(metadata.get("ready")), f"/metadata says the model is not ready: {metadata}")
    if origin is not None:
        served = str(metadata.get("origin"))
        check(served.startswith(origin), f"the model came from {served!r}, not {origin!r}")

    batch = client.post("/predict", json={"rows": rows}, headers={"X-Request-ID": "smoke-batch"})
    check(batch.status_code == 200, f"/predict answered {batch.status_code}: {batch.text[:1000]}")
    answer = batch.json()
    check(answer.get("request_id") == "smoke-batch", f"request id not echoed: {answer.get('request_id')!r}")
    probabilities = answer.get("probabilities") or []
    check(
        len(answer.get("predictions") or []) == len(rows) == len(probabilities),
        f"{len(rows)} rows sent, answer: {answer}",
    )
    check(all(math.isfinite(p) and 0 <= p <= 1 for p in probabilities), f"bad probabilities: {probabilities}")
    check(
        str(answer.get("model_version")) == str(metadata.get("model_version")),
        f"answered by v{answer.get('model_version')}, /metadata says v{metadata.get('model_version')}",
    )
    for i, row in enumerate(rows[:5]):
        single = client.post("/predict", json={"rows": [row]})
        check(single.status_code == 200, f"/predict (one row) answered {single.status_code}: {single.text[:500]}")
        alone = single.json()["probabilities"][0]
        check(abs(alone - probabilities[i]) < 1e-9, f"row {i}: {alone} alone, {probabilities[i]} in a batch")

    broken = {**rows[0], "no_such_column": 1}
    bad = client.post("/predict", json={"rows": [broken]})
    check(bad.status_code == 400, f"an unknown field answered {bad.status_code} (want 400): {bad.text[:500]}")
    check("no_such_column" in bad.text, f"the 400 does not name the field: {bad.text[:500]}")
    return metadata


def load(url: str, rows: list[dict[str, Any]], out: Path, concurrency: int, duration: float) -> dict[str, Any]:
    """benchmarks/loadgen.py against /predict, one row per request drawn from the data."""
    bodies = out / "bodies.jsonl"
    bodies.write_text("".join(json.dumps({"rows": [row]}) + "\n" for row in rows))
    report = out / "loadgen.json"
    command = [
        sys.executable,
        str(LOADGEN),
        "--url",
        url,
        "--body-file",
        str(bodies),
        "--concurrency",
        str(concurrency),
        "--duration",
        str(duration),
        "--warmup",
        "2",
        "--timeout",
        "30",
        "--out",
        str(report),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 120)
    check(done.returncode == 0, f"loadgen exited with {done.returncode}:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(report.read_text())
    check(result["count"] > 0, f"no request was measured: {result}")
    check(result["non_2xx"] == 0, f"{result['non_2xx']} of {result['count']} answers were not 2xx: {result['errors']}")
    return result


def markdown(title: str, metadata: dict[str, Any], result: dict[str, Any] | None, error: str | None) -> str:
    lines = [f"## {title}", ""]
    if metadata:
        lines.append(
            f"Served `{metadata.get('model_name')}` v{metadata.get('model_version')} (from {metadata.get('origin')})"
        )
        lines.append("")
    if result is not None:
        lines += [
            "| requests | req/s | p50 ms | p99 ms | max ms | non-2xx | concurrency |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            f"| {result['count']} | {result['rps']:.0f} | {result['p50_ms']:.1f} | {result['p99_ms']:.1f} "
            f"| {result['max_ms']:.1f} | {result['non_2xx']} | {result['concurrency']} |",
            "",
        ]
    passed = "✅ readiness, health, metadata, predictions, a 400 for a bad field and the load test passed"
    lines.append(f"❌ {error}" if error else passed)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="Parquet file or folder the request rows come from.")
    parser.add_argument("--drop", action="append", default=[], help="Column not sent (label, time; repeatable).")
    parser.add_argument("--rows", type=int, default=200, help="Distinct rows for the requests.")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0, help="Measured seconds of load.")
    parser.add_argument("--ready-timeout", type=float, default=300.0)
    parser.add_argument("--expect-origin", help="Prefix /metadata's `origin` must have (a Bento: `bundle`).")
    parser.add_argument("--out", type=Path, default=Path("smoke"), help="Folder for the log and the reports.")
    parser.add_argument("--title", default="Service smoke and load test")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the server command, with {port}")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the server command after --")
    port = free_port()
    command = [part.replace("{port}", str(port)) for part in command]
    base = f"http://127.0.0.1:{port}"
    args.out.mkdir(parents=True, exist_ok=True)

    metadata: dict[str, Any] = {}
    result = None
    error = None
    try:
        rows = read_rows(args.data, args.drop, args.rows)
        with running(command, args.out / "server.log", base, args.ready_timeout):
            with httpx.Client(base_url=base, timeout=30) as client:
                metadata = smoke(client, rows, args.expect_origin)
            print(f"smoke test passed: {metadata.get('model_name')} v{metadata.get('model_version')}", flush=True)
            result = load(f"{base}/predict", rows, args.out, args.concurrency, args.duration)
            print(
                f"load test passed: {result['count']} requests, {result['rps']:.0f} req/s, "
                f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, non-2xx {result['non_2xx']}",
                flush=True,
            )
    except SmokeFailure as exc:
        error = str(exc)
    text = markdown(args.title, metadata, result, error.splitlines()[0] if error else None)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as handle:
            handle.write(text + "\n")
    if error:
        print(f"FAILED: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
