"""Closed-loop HTTP load generator: C workers, each sends its next request when the last one ends.

Meant to run in its own process (`benchmarks/bench_serving.py` starts it), so the server and the
client do not share an interpreter. One aiohttp ClientSession, a keep-alive connection pool of
exactly `--concurrency` connections, request bodies encoded once up front and drawn in turn from
a pool (one JSON body per line of `--body-file`) so the server never sees one repeated input.
Requests started during `--warmup` are not counted; then every request started within
`--duration` seconds is recorded (latency from send to the last byte of the answer, and status).

Prints one JSON object: count, rps, p50/p90/p99/max (ms), non_2xx, the first few error bodies,
and the CPU this process used during the measured window (so a reader can judge how much of a
small machine the client took from the server), plus the server's CPU when `--watch-pid` is set.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

KEPT_ERRORS = 5


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Watched:
    """CPU seconds of a process and its descendants (the server), read without disturbing it."""

    def __init__(self, pid: int | None) -> None:
        self.root = None
        if pid:
            import psutil

            self.root = psutil.Process(pid)

    def cpu(self) -> float | None:
        if self.root is None:
            return None
        import psutil

        total = 0.0
        try:
            processes = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return None
        for process in processes:
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
        return total


def _busy_cpu() -> float | None:
    """CPU seconds the whole machine spent busy so far (every core; idle and iowait excluded)."""
    try:
        import psutil
    except ImportError:
        return None
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    rank = max(0, min(len(sorted_values) - 1, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[rank]


def _cpu_used(marks: dict[str, float | None], key: str) -> float | None:
    start, end = marks[key], marks[f"{key}_end"]
    return end - start if start is not None and end is not None else None


@dataclass
class _Tally:
    """What the measured window saw; a request sent during the warm-up is only counted as sent."""

    window_start: float
    window_end: float
    latencies: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    non_2xx: int = 0
    sent_total: int = 0
    last_end: float = 0.0

    def __post_init__(self) -> None:
        self.last_end = self.window_start

    def record(self, sent: float, ended: float, status: int, text: str) -> None:
        self.sent_total += 1
        if sent < self.window_start:
            return  # warm-up: neither counted nor timed
        self.latencies.append(ended - sent)
        self.last_end = max(self.last_end, ended)
        self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1
        if not 200 <= status < 300:
            self.non_2xx += 1
            if len(self.errors) < KEPT_ERRORS:
                self.errors.append(f"{status or 'no answer'}: {text}")


def _summary(args: argparse.Namespace, pool: int, tally: _Tally, marks: dict[str, float | None]) -> dict:
    """The measured window's figures: latency percentiles, throughput, answers, and the CPU each side used."""
    latencies = sorted(tally.latencies)
    elapsed = max(tally.last_end, tally.window_end) - tally.window_start if latencies else args.duration
    ms = [v * 1000 for v in latencies]
    self_cpu = marks["self_end"] - marks["self"]
    server_cpu, machine_cpu = _cpu_used(marks, "server"), _cpu_used(marks, "machine")
    # Everything else the machine ran meanwhile (other jobs on a shared host): the noise to judge by.
    other_cpu = machine_cpu - self_cpu - (server_cpu or 0.0) if machine_cpu is not None else None
    return {
        "url": args.url,
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "measured_s": elapsed,
        "count": len(latencies),
        "requests_including_warmup": tally.sent_total,
        "rps": len(latencies) / elapsed if elapsed > 0 else 0.0,
        "p50_ms": _percentile(ms, 50),
        "p90_ms": _percentile(ms, 90),
        "p99_ms": _percentile(ms, 99),
        "max_ms": ms[-1] if ms else None,
        "mean_ms": sum(ms) / len(ms) if ms else None,
        "non_2xx": tally.non_2xx,
        "statuses": tally.statuses,
        "errors": tally.errors,
        "client_cpu_s": self_cpu,
        "client_cpu_share": self_cpu / args.duration,  # of one core, over the measured window
        "server_cpu_s": server_cpu,
        "server_cpu_share": server_cpu / args.duration if server_cpu is not None else None,
        "machine_cpu_share": machine_cpu / args.duration if machine_cpu is not None else None,
        "other_cpu_share": other_cpu / args.duration if other_cpu is not None else None,
        "cpus": os.cpu_count(),
        "body_pool": pool,
    }


async def _mark_window(
    loop: asyncio.AbstractEventLoop, tally: _Tally, watched: _Watched, marks: dict[str, float | None]
) -> None:
    """CPU counters (this process, the server, the machine) when the measured window opens and closes."""
    await asyncio.sleep(max(0.0, tally.window_start - loop.time()))
    marks["self"], marks["server"], marks["machine"] = _cpu_self(), watched.cpu(), _busy_cpu()
    await asyncio.sleep(max(0.0, tally.window_end - loop.time()))
    marks["self_end"], marks["server_end"], marks["machine_end"] = _cpu_self(), watched.cpu(), _busy_cpu()


async def _worker(
    index: int,
    args: argparse.Namespace,
    bodies: list[bytes | None],
    session: aiohttp.ClientSession,
    loop: asyncio.AbstractEventLoop,
    tally: _Tally,
) -> None:
    """One closed-loop client: its next request goes out when the last one is answered, until the window ends."""
    i = index * max(1, len(bodies) // args.concurrency)
    while True:
        sent = loop.time()
        if sent >= tally.window_end:
            return
        body = bodies[i % len(bodies)]
        i += 1
        status = 0
        text = ""
        try:
            async with session.request(args.method, args.url, data=body) as response:
                payload = await response.read()
                status = response.status
                if not 200 <= status < 300:
                    text = payload[:500].decode("utf-8", "replace")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            text = f"{type(exc).__name__}: {exc}"
        tally.record(sent, loop.time(), status, text)


async def _run(args: argparse.Namespace, bodies: list[bytes | None], headers: dict[str, str]) -> dict:
    watched = _Watched(args.watch_pid)
    loop = asyncio.get_running_loop()
    started = loop.time()
    window_start = started + args.warmup
    tally = _Tally(window_start, window_start + args.duration)
    marks: dict[str, float | None] = {}
    connector = aiohttp.TCPConnector(limit=args.concurrency, limit_per_host=args.concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers=headers, skip_auto_headers=("User-Agent",)
    ) as session:
        marker = asyncio.create_task(_mark_window(loop, tally, watched, marks))
        await asyncio.gather(*(_worker(k, args, bodies, session, loop, tally) for k in range(args.concurrency)))
        await marker
    return _summary(args, len(bodies), tally, marks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="Target, e.g. http://127.0.0.1:3000/predict")
    parser.add_argument("--body-file", type=Path, default=None, help="One JSON request body per line.")
    parser.add_argument("--method", default="POST", help="HTTP method (GET sends no body: a framework floor).")
    parser.add_argument("--concurrency", "-c", type=int, default=1)
    parser.add_argument("--duration", type=float, default=30.0, help="Measured seconds (after the warm-up).")
    parser.add_argument("--warmup", type=float, default=2.0, help="Seconds of load not counted.")
    parser.add_argument("--timeout", type=float, default=60.0, help="Per-request timeout, seconds.")
    parser.add_argument("--header", action="append", default=[], help="Extra header 'Name: value' (repeatable).")
    parser.add_argument(
        "--bearer-env", default=None, help="Send `Authorization: Bearer $VAR` when this variable is set (not argv)."
    )
    parser.add_argument("--watch-pid", type=int, default=None, help="Also report this process tree's CPU use.")
    parser.add_argument("--out", type=Path, default=None, help="Write the JSON here too.")
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.duration <= 0:
        parser.error("--concurrency must be >= 1 and --duration > 0")

    if args.body_file is None:
        if args.method.upper() == "POST":
            parser.error("POST needs --body-file")
        bodies: list[bytes | None] = [None]
    else:
        bodies = [line.strip().encode() for line in args.body_file.read_text().splitlines() if line.strip()]
        if not bodies:
            parser.error(f"{args.body_file} holds no request body")
    headers = {"Content-Type": "application/json"}
    for header in args.header:
        name, _, value = header.partition(":")
        headers[name.strip()] = value.strip()
    if args.bearer_env and os.environ.get(args.bearer_env):
        headers["Authorization"] = f"Bearer {os.environ[args.bearer_env]}"

    result = asyncio.run(_run(args, bodies, headers))
    text = json.dumps(result)
    if args.out:
        args.out.write_text(text + "\n")
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
