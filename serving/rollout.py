"""The challenger beside the champion: scored in shadow off the response path, or answering a canary.

In shadow the champion answers every request; the batch's inputs and the champion's answer go to a
`ShadowScorer`, whose own thread scores them with the challenger and queues one log row per input
with both answers (`_model_version` / `_prediction` / `_probability`: what was served; the
`_shadow_*` columns: the challenger's). The response never waits for the challenger: when the
scorer falls behind by more than `max_pending_rows`, a batch is logged with the champion's answer
only and counted as skipped, and a challenger that fails to score is counted, not raised.

In canary a stable hash of the request key (the id column's value, else the request id) sends a
share of keys to the challenger, always the same ones; both answers are computed on the path
(through the compiled path that costs tens of microseconds) and logged the same way.
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from components.inference.compiled import WALK_MAX_ROWS
from components.inference.inputs import Inputs, concat_inputs, inputs_from_records
from components.inference.predlog import (
    SHADOW_PREDICTION,
    SHADOW_PROBABILITY,
    SHADOW_VERSION,
    PredictionLog,
    answer_columns,
)
from components.inference.scoring import Predictions
from serving.champion import LoadedModel

logger = logging.getLogger("mlops.serving")

GROUP_ROWS = WALK_MAX_ROWS  # rows scored in one call by the shadow


def key_share(key: str) -> float:
    """Where a request key falls in [0, 1): stable across processes and restarts (CRC-32)."""
    return zlib.crc32(key.encode("utf-8")) / 2**32


def inputs_for(model: LoadedModel, rows: Sequence[Mapping[str, Any]], inputs: Inputs) -> Inputs:
    """The champion's checked inputs when the challenger reads the same column kinds; else its own."""
    schema = model.served.schema
    if (schema.numeric, schema.categorical) == (inputs.numeric_names, inputs.categorical_names):
        return inputs
    return inputs_from_records(rows, schema.numeric, schema.categorical)


def shadow_columns(version: str | Sequence[str], answer: Predictions | None, rows: int) -> dict[str, Any]:
    """The other version's answer as log columns (nulls when it could not answer); `version`: one
    for every row, or each row's (a canary's unserved answers come from either version)."""
    versions = [version] * rows if isinstance(version, str) else list(version)
    if answer is None:
        return {SHADOW_VERSION: versions, SHADOW_PREDICTION: [None] * rows, SHADOW_PROBABILITY: [None] * rows}
    predicted, probability = answer_columns(answer.labels, answer.probabilities, rows)
    return {SHADOW_VERSION: versions, SHADOW_PREDICTION: predicted, SHADOW_PROBABILITY: probability}


def pick(mask: np.ndarray, first: Sequence[Any], second: Sequence[Any]) -> list[Any]:
    """Per row, `second`'s value where `mask`, else `first`'s (empty for a regressor's probabilities)."""
    if not len(first) and not len(second):
        return []
    return [b if m else a for a, b, m in zip(first, second, mask, strict=True)]


@dataclass
class ShadowStats:
    scored_rows: int = 0
    skipped_rows: int = 0  # logged with the champion's answer only: the scorer was behind
    failed_rows: int = 0  # the challenger could not score them
    pending_rows: int = 0
    last_error: str | None = None


class ShadowScorer:
    """Scores the champion's batches with the challenger on its own thread, then logs both answers.

    The thread wakes every `coalesce_seconds` and scores everything queued since in one call: a
    wake-up per request made the thread take Python's lock right when the event loop wanted it for
    the next request, adding a third of a millisecond to every answer at concurrency 1."""

    def __init__(self, log: PredictionLog, max_pending_rows: int = 20_000, coalesce_seconds: float = 0.25) -> None:
        self.log = log
        self.max_pending_rows = max_pending_rows
        self.coalesce_seconds = coalesce_seconds
        self.stats = ShadowStats()
        self._pending: deque[tuple[Any, ...]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="shadow-scorer", daemon=True)
        self._thread.start()

    def submit(
        self,
        challenger: LoadedModel,
        rows: Sequence[Mapping[str, Any]],
        inputs: Inputs,
        ids: Sequence[str],
        served: tuple[str, Predictions],
        extra: dict[str, Any] | None,
    ) -> None:
        """Queue one answered batch for the challenger; never blocks on its scoring."""
        with self._lock:
            behind = self.stats.pending_rows + inputs.rows > self.max_pending_rows
            if not behind:
                self._pending.append((challenger, rows, inputs, ids, served, extra))
                self.stats.pending_rows += inputs.rows
            else:
                self.stats.skipped_rows += inputs.rows
        if behind:
            version, answer = served
            self.log.append_batch(inputs.columns(), ids, version, answer.labels, answer.probabilities, extra)
        elif not self._wake.is_set():
            self._wake.set()

    def _loop(self) -> None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1)
        while not self._stopped.is_set() or self._pending:
            self._wake.wait(0.5)
            self._stopped.wait(self.coalesce_seconds)  # let a few requests' worth gather
            self._wake.clear()
            with self._lock:
                items = list(self._pending)
                self._pending.clear()
            for group in _groups(items):
                self._score(group)

    def _score(self, group: list[tuple[Any, ...]]) -> None:
        """One predict and one log append for queued batches of the same versions and log columns."""
        challenger: LoadedModel = group[0][0]
        version = group[0][4][0]
        rows = [row for item in group for row in item[1]]
        inputs = concat_inputs([item[2] for item in group])
        ids = [i for item in group for i in item[3]]
        labels = [v for item in group for v in item[4][1].labels]
        probabilities = [v for item in group for v in item[4][1].probabilities]
        extra = {k: [v for item in group for v in item[5][k]] for k in group[0][5]} if group[0][5] else {}
        answer: Predictions | None = None
        try:
            answer = challenger.served.predict_inputs(inputs_for(challenger, rows, inputs))
        except Exception as exc:  # noqa: BLE001 - the challenger's failure never reaches a client
            message = f"{type(exc).__name__}: {exc}"
            if message != self.stats.last_error:
                logger.error("challenger v%s could not score a batch: %s", challenger.version, message)
            self.stats.last_error = message
        columns = shadow_columns(challenger.version, answer, inputs.rows)
        self.log.append_batch(inputs.columns(), ids, version, labels, probabilities, {**extra, **columns})
        with self._lock:
            self.stats.pending_rows -= inputs.rows
            if answer is None:
                self.stats.failed_rows += inputs.rows
            else:
                self.stats.scored_rows += inputs.rows

    def close(self, timeout: float = 10.0) -> None:
        """Score what is queued, then stop (before the prediction log closes)."""
        self._stopped.set()
        self._wake.set()
        self._thread.join(timeout)


def _groups(items: list[tuple[Any, ...]], max_rows: int = GROUP_ROWS) -> list[list[tuple[Any, ...]]]:
    """Consecutive queued batches that can be scored together: the same challenger, champion
    version, input columns and log columns, up to `max_rows` rows (a tree model then walks its
    trees in compiled code that releases Python's lock, so the event loop never waits on it)."""
    groups: list[list[tuple[Any, ...]]] = []
    last: tuple[Any, ...] | None = None
    rows = 0
    for item in items:
        key = (id(item[0]), item[4][0], item[2].numeric_names, item[2].categorical_names, tuple(item[5] or ()))
        if key == last and rows + item[2].rows <= max_rows:
            groups[-1].append(item)
            rows += item[2].rows
        else:
            groups.append([item])
            last, rows = key, item[2].rows
    return groups
