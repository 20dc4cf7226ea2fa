"""The service's parts on their own: batching, the prediction log, the request schema."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from components.inference.predlog import (
    LOG_COLUMNS,
    LOGGED_AT,
    PREDICTION,
    REQUEST_ID,
    PredictionLog,
    log_files,
    log_frame,
    read_prediction_log,
)
from serving.batching import Job, MicroBatcher, Overloaded
from serving.schema import Column, row_model, same_columns


def _doubler(batches: list[int], delay: float = 0.01):
    def handle(jobs: list[Job]) -> list[object]:
        batches.append(sum(len(job.rows) for job in jobs))
        time.sleep(delay)
        out: list[object] = []
        for job in jobs:
            if "bad" in job.rows:
                out.append(ValueError(f"{job.request_id} is bad"))
            else:
                out.append([2 * r for r in job.rows])
        return out

    return handle


def test_concurrent_requests_share_predict_calls_and_get_their_own_answers() -> None:
    batches: list[int] = []
    batcher = MicroBatcher(_doubler(batches), max_batch_rows=1000, timeout=10, max_queued_rows=10_000)

    async def main() -> list[object]:
        return await asyncio.gather(*(batcher.submit([i, i + 1], f"r{i}") for i in range(100)))

    answers = asyncio.run(main())
    assert answers == [[2 * i, 2 * i + 2] for i in range(100)]
    assert sum(batches) == 200 and len(batches) < 100
    assert batcher.stats.batches == len(batches) and batcher.stats.largest_batch_rows == max(batches)


def test_a_failing_request_fails_alone() -> None:
    batcher = MicroBatcher(_doubler([]), max_batch_rows=1000, timeout=10, max_queued_rows=10_000)

    async def main() -> list[object]:
        return await asyncio.gather(
            batcher.submit([1], "a"), batcher.submit(["bad"], "b"), batcher.submit([3], "c"), return_exceptions=True
        )

    a, b, c = asyncio.run(main())
    assert a == [2] and c == [6]
    assert isinstance(b, ValueError) and "b is bad" in str(b)


def test_batches_respect_the_row_limit() -> None:
    batches: list[int] = []
    batcher = MicroBatcher(_doubler(batches), max_batch_rows=10, timeout=10, max_queued_rows=10_000)

    async def main() -> None:
        await asyncio.gather(*(batcher.submit([1, 2, 3], str(i)) for i in range(20)))

    asyncio.run(main())
    assert max(batches) <= 10 and sum(batches) == 60


def test_cheap_batches_are_answered_on_the_event_loop_and_the_rest_on_the_prediction_thread() -> None:
    import threading

    threads: list[str] = []
    handle = _doubler([], delay=0.0)

    def recording(jobs: list[Job]) -> list[object]:
        threads.append(threading.current_thread().name)
        return handle(jobs)

    batcher = MicroBatcher(
        recording,
        max_batch_rows=1000,
        timeout=10,
        max_queued_rows=10_000,
        inline=lambda jobs: sum(len(job.rows) for job in jobs) <= 4,
    )

    async def main() -> tuple[object, ...]:
        lone = await batcher.submit([1, 2], "lone")  # a few rows: predicted on the event loop
        with pytest.raises(ValueError, match="bad is bad"):
            await batcher.submit(["bad"], "bad")  # its own error, raised where it was asked
        large = await batcher.submit(list(range(10)), "large")
        together = await asyncio.gather(*(batcher.submit([i], str(i)) for i in range(3)))
        return lone, large, together

    lone, large, together = asyncio.run(main())
    assert lone == [2, 4] and large == [2 * i for i in range(10)] and together == [[0], [2], [4]]
    main_thread = threading.main_thread().name
    assert threads[:2] == [main_thread, main_thread]
    assert threads[2].startswith("predict")
    assert set(threads[3:]) == {main_thread}
    assert batcher.stats.rows == 2 + 1 + 10 + 3
    batcher.close()


def test_overload_is_refused_not_queued_forever() -> None:
    batcher = MicroBatcher(_doubler([], delay=0.3), max_batch_rows=1, timeout=0.1, max_queued_rows=3)

    async def main() -> list[object]:
        return await asyncio.gather(*(batcher.submit([i], str(i)) for i in range(6)), return_exceptions=True)

    answers = asyncio.run(main())
    refused = [a for a in answers if isinstance(a, Overloaded)]
    assert answers[0] == [0]  # the first is predicted at once
    assert len(refused) >= 3  # over the queue bound at once, or waited past the timeout
    assert batcher.stats.rejected == len(refused)


def test_prediction_log_writes_files_and_reads_them_back(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, flush_seconds=60, flush_rows=1_000_000)
    features = pd.DataFrame({"age": [30.0, 41.0], "region": ["north", None]})
    log.append(log_frame(features, ["r1", "r1"], "3", [0, 1], [0.2, 0.9]))
    log.append(log_frame(features.head(1), ["r2"], "4", [1], [0.7]))
    assert read_prediction_log(tmp_path).empty  # nothing on disk until a flush
    log.close()
    frame = read_prediction_log(tmp_path)
    assert frame[REQUEST_ID].tolist() == ["r1", "r1", "r2"]
    assert frame[PREDICTION].tolist() == ["0", "1", "1"]
    assert frame["region"].iloc[0] == "north" and pd.isna(frame["region"].iloc[1])
    assert len(log_files(tmp_path)) == 1 and not list(tmp_path.rglob(".*.partial"))
    assert log.stats().written_rows == 3


def test_prediction_log_batches_are_written_as_the_frames_would_be(tmp_path: Path) -> None:
    at = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    first = pd.DataFrame({"age": [30.0, np.nan], "region": [None, None]})  # an all-null column here ...
    second = pd.DataFrame({"age": [52.0], "region": ["south"]})  # ... and a string one in the next batch
    batched, framed = PredictionLog(tmp_path / "b", flush_seconds=60), PredictionLog(tmp_path / "f", flush_seconds=60)
    for features, ids, version, labels, probabilities, loan_ids in (
        (first, ["a", "a"], "3", [0, 1], [0.2, 0.9], [7, None]),
        (second, ["b"], "4", [1], [0.7], [9]),
    ):
        batched.append_batch(features, ids, version, labels, probabilities, {"loan_id": loan_ids}, at=at)
        framed.append(log_frame(features.assign(loan_id=loan_ids), ids, version, labels, probabilities, at))
    batched.close()
    framed.close()
    got, expected = read_prediction_log(tmp_path / "b"), read_prediction_log(tmp_path / "f")
    assert list(got.columns) == ["age", "region", "loan_id", *LOG_COLUMNS]
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert got["region"].tolist()[2] == "south" and got["region"].isna().sum() == 2
    assert got[LOGGED_AT].dt.tz is not None and (got[LOGGED_AT] == pd.Timestamp(at)).all()


def test_one_odd_id_loses_no_row_of_its_flush(tmp_path: Path) -> None:
    """200 rows plus one string id and one 30-digit id, in one flush and in batches of their own:
    every row is written (the id column as text where it must be), none dropped."""
    log = PredictionLog(tmp_path, flush_seconds=60, flush_rows=1_000_000)
    features = pd.DataFrame({"x": np.arange(200, dtype="float64")})
    log.append_batch(features, ["r"] * 200, "1", [0] * 200, [0.1] * 200, {"loan_id": list(range(200))})
    for odd in ("abc", 10**30):
        log.append_batch(features.head(1), ["odd"], "1", [1], [0.9], {"loan_id": [odd]})
    log.append(log_frame(pd.DataFrame({"x": [1.0, 2.0], "loan_id": [5, "xyz"]}), ["f", "f"], "1", [0, 1], [0.2, 0.8]))
    log.close()
    frame = read_prediction_log(tmp_path)
    assert len(frame) == 204 and log.stats().written_rows == 204 and log.stats().dropped_rows == 0
    assert {"abc", str(10**30), "xyz", "199"} <= {str(v) for v in frame["loan_id"]}


def test_a_truncated_log_file_does_not_blind_monitoring(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, flush_seconds=60)
    log.append(log_frame(pd.DataFrame({"x": [1.0, 2.0]}), ["a", "a"], "1", [0, 1], [0.2, 0.9]))
    log.flush()
    log.append(log_frame(pd.DataFrame({"x": [3.0]}), ["b"], "1", [1], [0.7]))
    log.close()
    first, _ = log_files(tmp_path)
    first.write_bytes(first.read_bytes()[:40])  # cut short, as a crash on a disk without fsync could
    frame = read_prediction_log(tmp_path)
    assert frame[REQUEST_ID].tolist() == ["b"]


def test_prediction_log_drops_and_counts_when_the_disk_falls_behind(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, flush_seconds=60, flush_rows=1_000_000, max_pending_rows=2)
    frame = log_frame(pd.DataFrame({"x": [1.0]}), ["r"], "1", [0], [0.1])
    for _ in range(5):
        log.append(frame)
    assert log.stats().dropped_rows == 3 and log.stats().pending_rows == 2
    log.close()
    assert len(read_prediction_log(tmp_path)) == 2


COLUMNS = (Column("age", "double", True), Column("income", "double", False), Column("region", "string", True))


def test_row_model_requires_every_column_with_its_type() -> None:
    Row = row_model("loans", COLUMNS, id_column="loan_id")
    assert Row(age=30, income=None, region="north").age == 30.0
    assert Row(age=30, income=1.5, region="north", loan_id=7).loan_id == 7
    for bad in (
        {"age": "30", "income": 1.0, "region": "north"},
        {"age": True, "income": 1.0, "region": "north"},
        {"age": float("inf"), "income": 1.0, "region": "north"},
        {"age": 30, "region": "north"},
        {"age": None, "income": 1.0, "region": "north"},
        {"age": 30, "income": 1.0, "region": 5},
        {"age": 30, "income": 1.0, "region": "n", "colour": "red"},
    ):
        with pytest.raises(ValidationError):
            Row(**bad)


def test_a_new_version_with_other_columns_is_not_compatible() -> None:
    assert same_columns(COLUMNS, COLUMNS)
    assert not same_columns(COLUMNS, COLUMNS[:2])
    assert not same_columns(COLUMNS, (COLUMNS[0], COLUMNS[1], Column("region", "double", True)))
    # Requests may carry null income: a version that refuses nulls there cannot take them ...
    assert not same_columns(COLUMNS, (COLUMNS[0], Column("income", "double", True), COLUMNS[2]))
    # ... while a version that accepts nulls where requests never have them can.
    strict = (COLUMNS[0], Column("income", "double", True), COLUMNS[2])
    assert same_columns(strict, COLUMNS)


def test_the_service_log_shows_which_version_and_path_answer() -> None:
    """BentoML's server logging passes WARNING and above from other loggers; the service raises its own
    to INFO (an explicit level someone set is kept)."""
    import logging

    from serving.runtime import show_service_lines

    ours, components = logging.getLogger("mlops"), logging.getLogger("components")
    saved = ours.level, components.level
    try:
        ours.setLevel(logging.NOTSET)
        components.setLevel(logging.ERROR)
        show_service_lines()
        assert logging.getLogger("mlops.serving").getEffectiveLevel() == logging.INFO
        assert components.level == logging.ERROR
    finally:
        ours.setLevel(saved[0])
        components.setLevel(saved[1])


class _Answer:
    def __init__(self, rows: list[object]) -> None:
        self.rows = rows

    def body(self, request_id: str) -> dict[str, object]:
        return {"request_id": request_id, "predictions": self.rows}


def _route_answers(handle, body: bytes, *, path: str = "/predict", method: str = "POST", more: bool = False):
    """What `PredictRoute` sends for one request, with a real batcher answering through `handle`."""
    import json
    import types

    from pydantic import BaseModel

    from serving.fastpath import PredictRoute, RouteState

    class Rows(BaseModel):
        rows: list[int]

    passed: list[str] = []

    async def behind(scope, receive, send) -> None:
        passed.append(scope["path"])

    async def run() -> list[dict]:
        batcher = MicroBatcher(handle, max_batch_rows=100, timeout=5, max_queued_rows=1000)
        state = RouteState(types.SimpleNamespace(batcher=batcher))
        parse = lambda raw: Rows.model_validate_json(raw).rows  # noqa: E731
        route = PredictRoute(behind, state=state, parse=parse, max_rows=3, server_header="test")
        messages = [{"type": "http.request", "body": body, "more_body": more}, {"type": "http.disconnect"}]
        sent: list[dict] = []

        async def receive() -> dict:
            return messages.pop(0)

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "path": path, "method": method, "headers": [(b"x-request-id", b"r-1")]}
        await route(scope, receive, send)
        batcher.close()
        return sent

    sent = asyncio.run(run())
    if not sent:
        return None, None, {}, passed
    headers = dict(sent[0]["headers"])
    return sent[0]["status"], json.loads(sent[1]["body"]), headers, passed


def _answer_rows(jobs: list[Job]) -> list[object]:
    out: list[object] = []
    for job in jobs:
        if 13 in job.rows:
            out.append(RuntimeError("unlucky"))
        elif 7 in job.rows:
            from components.inference.scoring import InputError

            out.append(InputError("7 cannot be scored"))
        else:
            out.append(_Answer(list(job.rows)))
    return out


def test_the_predict_route_answers_and_refuses_like_the_api() -> None:
    status, body, headers, passed = _route_answers(_answer_rows, b'{"rows": [1, 2]}')
    assert (status, body, passed) == (200, {"request_id": "r-1", "predictions": [1, 2]}, [])
    assert headers[b"content-type"] == b"application/json" and headers[b"server"] == b"test"
    status, body, _, _ = _route_answers(_answer_rows, b'{"rows": ["x"]}')
    assert status == 400 and body["detail"][0]["loc"] == ["rows", 0] and "validation error" in body["error"]
    assert _route_answers(_answer_rows, b"{not json")[0] == 400
    status, body, _, _ = _route_answers(_answer_rows, b'{"rows": []}')
    assert status == 400 and body == {"error": "rows: send at least one row", "request_id": "r-1"}
    status, body, _, _ = _route_answers(_answer_rows, b'{"rows": [1, 2, 3, 4]}')
    assert status == 413 and "limit of 3" in body["error"]
    status, body, _, _ = _route_answers(_answer_rows, b'{"rows": [7]}')
    assert (status, body["error"]) == (400, "7 cannot be scored")
    status, body, _, _ = _route_answers(_answer_rows, b'{"rows": [13]}')  # logged, not shown
    assert status == 500 and "unlucky" not in body["error"] and body["request_id"] == "r-1"


def test_the_predict_route_passes_other_requests_on_and_drops_a_client_that_left() -> None:
    assert _route_answers(_answer_rows, b"", path="/metadata", method="GET")[3] == ["/metadata"]
    assert _route_answers(_answer_rows, b"", method="GET")[3] == ["/predict"]
    assert _route_answers(_answer_rows, b'{"rows": [1', more=True)[:2] == (None, None)  # then a disconnect


def test_an_overloaded_batcher_is_a_503_with_retry_after() -> None:
    def slow(jobs: list[Job]) -> list[object]:
        raise AssertionError("not reached")

    import types

    from serving.fastpath import predict_reply

    async def run():
        batcher = MicroBatcher(slow, max_batch_rows=1, timeout=5, max_queued_rows=0)
        try:
            return await predict_reply(types.SimpleNamespace(batcher=batcher), [1], "r-2", 10)
        finally:
            batcher.close()

    reply = asyncio.run(run())
    assert reply.status == 503 and (b"retry-after", b"1") in reply.headers
