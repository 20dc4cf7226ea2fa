"""What one service process holds: the champion's source, the micro-batcher and the prediction log.

`serving.service` builds the BentoML class around one `ServiceRuntime` per process; the runtime
predicts a batch of requests together and splits the answer back per request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from components.core.config import PipelineConfig, ServingConfig
from components.inference.inputs import inputs_from_records
from components.inference.predlog import PredictionLog
from components.inference.scoring import InputError, Predictions
from serving.batching import Job, MicroBatcher, Overloaded
from serving.champion import BundleSource, Challenger, LoadedModel, RegistrySource
from serving.rollout import ShadowScorer, inputs_for, key_share, pick, shadow_columns
from serving.schema import Column

logger = logging.getLogger("mlops.serving")

# Queued rows beyond this many batches are answered 503 at once rather than after a timeout.
QUEUED_BATCHES = 64
# Batches of up to this many rows answered on the event loop when the compiled path serves (the
# arrays are walked in NumPy, no OpenMP pool involved); larger ones and the pipeline go to the
# prediction thread.
INLINE_ROWS = 4


@dataclass(frozen=True)
class ServiceSettings:
    """Everything the service class is built from."""

    model_name: str
    columns: tuple[Column, ...]
    output_type: str | None
    task: str
    serving: ServingConfig
    predictions_dir: Path | None
    api_key: str | None = None
    config: PipelineConfig | None = None
    bundle_tag: str | None = None
    id_column: str | None = None


def _one_thread() -> None:
    """On the prediction thread: BLAS/OpenMP pools turn small batches into tens of ms with stalls
    (OpenMP's limit is per thread, so it is set on the thread that predicts)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


@dataclass(frozen=True)
class Answer:
    """One request's share of a batch's predictions."""

    model: LoadedModel
    predictions: Predictions
    start: int
    end: int

    def body(self, request_id: str) -> dict[str, Any]:
        """The JSON answer: labels and probabilities (every class's, for multiclass), or numbers and intervals."""
        p, rows = self.predictions, slice(self.start, self.end)
        body: dict[str, Any] = {
            "request_id": request_id,
            "model_name": self.model.name,
            "model_version": self.model.version,
            "predictions": p.labels[rows],
        }
        if p.class_probabilities is not None:
            names = [str(c) for c in p.classes]
            body["probabilities"] = [dict(zip(names, row, strict=True)) for row in p.class_probabilities[rows]]
        elif p.classes:
            body["probabilities"] = p.probabilities[rows]
        elif p.lower is not None and p.upper is not None:
            body["intervals"] = [[low, high] for low, high in zip(p.lower[rows], p.upper[rows], strict=True)]
            body["interval_coverage"] = self.model.served.coverage
        return body


def show_service_lines() -> None:
    """BentoML's server logging passes WARNING and above from other libraries; which version
    answers, and through which inference path, are INFO lines the service's log must show."""
    for name in ("mlops", "components"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)


def open_source(settings: ServiceSettings, bundle_path: Path | None) -> RegistrySource | BundleSource:
    """The bundled copy when the service was built with one, else the registry's champion (reloaded)."""
    if bundle_path is not None:
        return BundleSource(bundle_path).start()
    from components.core.workspace import Workspace
    from components.tracking import registry

    assert settings.config is not None
    client = registry.connect(Workspace.at(settings.config.home))
    return RegistrySource(
        client, settings.model_name, settings.columns, settings.serving.reload_seconds, settings.task
    ).start()


def open_prediction_log(settings: ServiceSettings) -> PredictionLog | None:
    """The prediction log, when the model's settings keep one."""
    if settings.predictions_dir is None:
        return None
    log = settings.serving.prediction_log
    return PredictionLog(
        settings.predictions_dir,
        flush_seconds=log.flush_seconds,
        flush_rows=log.flush_rows,
        max_pending_rows=log.max_pending_rows,
    )


class ServiceRuntime:
    """One service process's model source, batcher and prediction log, started and closed together."""

    def __init__(self, settings: ServiceSettings, bundle_path: Path | None) -> None:
        self.settings = settings
        serving = settings.serving
        names = [c.name for c in settings.columns]
        self.id_column = settings.id_column if settings.id_column not in names else None
        show_service_lines()
        self.source = open_source(settings, bundle_path)
        batch_rows = max(serving.max_batch_rows, serving.max_rows_per_request)
        self.batcher = MicroBatcher(
            self.predict_batch,
            max_batch_rows=batch_rows,
            timeout=serving.timeout_seconds,
            max_queued_rows=batch_rows * QUEUED_BATCHES,
            thread_setup=_one_thread,
            inline=self.answers_inline,
        )
        self.log = open_prediction_log(settings)
        self.shadow = ShadowScorer(self.log) if self.log is not None else None

    def answers_inline(self, jobs: list[Job]) -> bool:
        """Whether a batch is answered on the event loop: a few rows through the compiled path take
        tens of microseconds, less than the hand-off to the prediction thread and back."""
        model = self.source.current
        inference = model.served.inference if model is not None else None
        return (
            inference is not None
            and inference.compiled is not None
            and sum(len(job.rows) for job in jobs) <= INLINE_ROWS
        )

    def predict_batch(self, jobs: list[Job]) -> list[Any]:
        """On the prediction thread: one predict for all the jobs' rows, then split per job."""
        model = self.source.current
        if model is None:
            return [Overloaded("the model is still loading; retry shortly")] * len(jobs)
        try:
            return self._predict_together(model, jobs)
        except Exception:
            if len(jobs) == 1:
                raise
        results: list[Any] = []
        for job in jobs:
            try:
                results.extend(self._predict_together(model, [job]))
            except Exception as exc:  # noqa: BLE001 - this request's own failure
                results.append(exc)
        return results

    def _predict_together(self, model: LoadedModel, jobs: list[Job]) -> list[Any]:
        rows = [vars(row) for job in jobs for row in job.rows]  # the validated fields, without a copy
        schema = model.served.schema
        inputs = inputs_from_records(rows, schema.numeric, schema.categorical)
        try:
            answer = model.served.predict_inputs(inputs)
        except ValueError as exc:  # scikit-learn's input checks, e.g. a value that overflows to infinity
            raise InputError(f"the model cannot score these values: {exc}") from exc
        if not answer.finite:
            raise InputError("the model cannot score these values: the answers are not finite")
        trial = self.source.challenger
        if trial is not None and trial.rollout == "canary":
            return self._canary(model, trial, jobs, rows, inputs, answer)
        if self.log is not None:  # queued as arrays; the writer thread builds the log rows
            ids, extra = self._log_keys(jobs, rows)
            if trial is not None and self.shadow is not None:
                self.shadow.submit(trial.model, rows, inputs, ids, (model.version, answer), extra)
            else:
                self.log.append_batch(inputs.columns(), ids, model.version, answer.labels, answer.probabilities, extra)
        return self._split(jobs, [(model, answer)] * len(jobs))

    def _log_keys(self, jobs: list[Job], rows: list[dict[str, Any]]) -> tuple[list[str], dict[str, Any] | None]:
        """Each row's request id, and the id column's values when the log keeps them."""
        ids = [job.request_id for job in jobs for _ in job.rows]
        id_column = self.id_column
        return ids, ({id_column: [row[id_column] for row in rows]} if id_column is not None else None)

    @staticmethod
    def _split(jobs: list[Job], answered: list[tuple[LoadedModel, Predictions]]) -> list[Any]:
        out: list[Any] = []
        start = 0
        for job, (model, answer) in zip(jobs, answered, strict=True):
            end = start + len(job.rows)
            out.append(Answer(model, answer, start, end))
            start = end
        return out

    def _canary(
        self,
        model: LoadedModel,
        trial: Challenger,
        jobs: list[Job],
        rows: list[dict[str, Any]],
        inputs: Any,
        answer: Predictions,
    ) -> list[Any]:
        """Answer the jobs whose key falls in the canary share with the challenger; both answers are
        computed here and both logged. A challenger that cannot answer leaves it to the champion."""
        key = self.settings.id_column
        keys = [str(vars(job.rows[0]).get(key) if key and key in vars(job.rows[0]) else job.request_id) for job in jobs]
        tried = [key_share(k) < trial.share for k in keys]
        other: Predictions | None = None
        try:
            other = trial.model.served.predict_inputs(inputs_for(trial.model, rows, inputs))
            if not other.finite:
                raise InputError("its answers are not finite")
        except Exception as exc:  # noqa: BLE001 - the champion answers instead
            logger.error("canary challenger v%s could not answer: %s", trial.model.version, exc)
            other, tried = None, [False] * len(jobs)
        if self.log is not None:
            mask = np.repeat(np.asarray(tried, dtype=bool), [len(job.rows) for job in jobs])
            self._log_canary(jobs, rows, inputs, mask, (model, answer), (trial.model, other))
        answered = [(trial.model, other) if t and other is not None else (model, answer) for t in tried]
        return self._split(jobs, answered)

    def _log_canary(
        self,
        jobs: list[Job],
        rows: list[dict[str, Any]],
        inputs: Any,
        mask: np.ndarray,
        champion: tuple[LoadedModel, Predictions],
        challenger: tuple[LoadedModel, Predictions | None],
    ) -> None:
        """One log row per input: the answer served (`mask`: by the challenger) and the other one."""
        assert self.log is not None
        ids, extra = self._log_keys(jobs, rows)
        (first, answer), (second, other) = champion, challenger
        if other is None:
            served, versions = answer, [first.version] * len(rows)
            shadow = shadow_columns(second.version, None, len(rows))
        else:
            versions = list(np.where(mask, second.version, first.version))
            served = Predictions(
                pick(mask, answer.labels, other.labels),
                pick(mask, answer.probabilities, other.probabilities),
                answer.classes,
            )
            unserved = Predictions(
                pick(mask, other.labels, answer.labels),
                pick(mask, other.probabilities, answer.probabilities),
                answer.classes,
            )
            shadow = shadow_columns(list(np.where(mask, first.version, second.version)), unserved, len(rows))
        self.log.append_batch(
            inputs.columns(), ids, versions, served.labels, served.probabilities, {**(extra or {}), **shadow}
        )

    def metadata(self) -> dict[str, Any]:
        """Which model answers, how it reloads, how requests batch and where predictions are logged."""
        model, trial = self.source.current, self.source.challenger
        stats = self.log.stats() if self.log is not None else None
        return {
            "ready": model is not None,
            **(model.describe() if model is not None else {"model_name": self.settings.model_name}),
            "reload": self.source.describe(),
            "challenger": None if trial is None else {**trial.describe(), **self._shadow_stats(trial)},
            "batching": vars(self.batcher.stats),
            "prediction_log": None
            if stats is None
            else {"directory": str(self.settings.predictions_dir), **vars(stats)},
        }

    def _shadow_stats(self, trial: Challenger) -> dict[str, Any]:
        if trial.rollout != "shadow":
            return {}
        if self.shadow is None:
            return {"shadow": "not scored: this service keeps no prediction log to compare the answers in"}
        return {"shadow": vars(self.shadow.stats)}

    def close(self) -> None:
        self.source.stop()
        self.batcher.close()
        if self.shadow is not None:
            self.shadow.close()
        if self.log is not None:
            self.log.close()
