"""What one service process holds: the champion's source, the micro-batcher and the prediction log.

`serving.service` builds the BentoML class around one `ServiceRuntime` per process; the runtime
predicts a batch of requests together and splits the answer back per request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.core.config import PipelineConfig, ServingConfig
from components.inference.inputs import inputs_from_records
from components.inference.predlog import PredictionLog
from components.inference.scoring import InputError, Predictions
from serving.batching import Job, MicroBatcher, Overloaded
from serving.champion import BundleSource, LoadedModel, RegistrySource
from serving.schema import Column

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
        if self.log is not None:  # queued as arrays; the writer thread builds the log rows
            ids = [job.request_id for job in jobs for _ in job.rows]
            id_column = self.id_column
            extra = {id_column: [row[id_column] for row in rows]} if id_column is not None else None
            self.log.append_batch(inputs.columns(), ids, model.version, answer.labels, answer.probabilities, extra)
        out: list[Any] = []
        start = 0
        for job in jobs:
            end = start + len(job.rows)
            out.append(Answer(model, answer, start, end))
            start = end
        return out

    def metadata(self) -> dict[str, Any]:
        """Which model answers, how it reloads, how requests batch and where predictions are logged."""
        model = self.source.current
        stats = self.log.stats() if self.log is not None else None
        return {
            "ready": model is not None,
            **(model.describe() if model is not None else {"model_name": self.settings.model_name}),
            "reload": self.source.describe(),
            "batching": vars(self.batcher.stats),
            "prediction_log": None
            if stats is None
            else {"directory": str(self.settings.predictions_dir), **vars(stats)},
        }

    def close(self) -> None:
        self.source.stop()
        self.batcher.close()
        if self.log is not None:
            self.log.close()
