"""The operations sections: serving, batch scoring, monitoring, deployments and the Prefect server."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from components.core.config.base import _Section


class PredictionLogConfig(_Section):
    """Every answered request's inputs and outputs, appended as Parquet files under the workspace."""

    enabled: bool = True
    flush_seconds: float = Field(default=5.0, gt=0, description="Write a file at least this often while busy.")
    flush_rows: int = Field(default=50_000, ge=1, description="... or when this many rows are waiting.")
    max_pending_rows: int = Field(
        default=1_000_000,
        ge=1,
        description="Rows held in memory while the disk is slower than traffic; beyond this, rows are dropped "
        "and counted (GET /metadata), never making a request wait.",
    )


class ServingConfig(_Section):
    host: str = Field(default="127.0.0.1", description="Bind address; 0.0.0.0 exposes the service to the network.")
    port: int = Field(default=3000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, description="Server processes; each holds a copy of the model.")
    max_rows_per_request: int = Field(default=10_000, ge=1)
    max_body_mb: float = Field(default=32.0, gt=0, description="Larger request bodies are answered 413.")
    max_batch_rows: int = Field(
        default=4096, ge=1, description="Rows of concurrent requests predicted together in one call."
    )
    timeout_seconds: float = Field(default=30.0, gt=0, description="A request still queued after this is answered 503.")
    reload_seconds: float = Field(
        default=10.0, ge=0, description="How often the service checks whether `champion` moved; 0 never."
    )
    access_log: bool = Field(default=False, description="BentoML's per-request access log (costs latency).")
    metrics: bool = Field(default=True, description="Prometheus metrics at GET /metrics.")
    prediction_log: PredictionLogConfig = PredictionLogConfig()


class ScoringConfig(_Section):
    """Batch scoring (`mlops score`, the scoring flow); command-line flags override these."""

    chunk_rows: int = Field(
        default=100_000, ge=1, description="Rows scored per chunk, bounding memory (a Parquet row group is read whole)."
    )
    on_invalid: Literal["fail", "reject"] = Field(
        default="fail",
        description="A row that breaks the contract: 'fail' the job (nothing is written) or 'reject' it into "
        "the rejects file, with its reason, and score the rest.",
    )
    workers: int = Field(
        default=1,
        ge=1,
        description="Processes scoring partitions at once; more than 1 runs them on a local Dask cluster.",
    )
    dask_address: str | None = Field(
        default=None,
        description="A Dask scheduler to score partitions on (tcp://host:8786); its workers must see the input, "
        "the output folder and the workspace at the same paths (checked before scoring starts).",
    )


class MonitoringConfig(_Section):
    """Drift and decay checks (`mlops monitor`, the monitoring flow) and when they ask for retraining."""

    reference_rows: int = Field(
        default=20_000,
        ge=100,
        description="Training rows (with the model's scores) stored with each model as its reference.",
    )
    min_rows: int = Field(default=200, ge=10, description="A window with fewer rows gets no verdict.")
    p_value: float = Field(
        default=0.01,
        gt=0,
        lt=1,
        description="A feature's test (numeric: KS or chi-square over its bins; categorical: chi-square) must "
        "reject at this level ...",
    )
    psi_min: float = Field(
        default=0.1, ge=0, description="... and its population stability index reach this, for the feature to drift ..."
    )
    psi_threshold: float = Field(
        default=0.25,
        ge=0,
        description="... or its PSI alone reach this beyond what chance gives samples of these sizes.",
    )
    drift_share: float = Field(
        default=0.2, gt=0, le=1, description="The window drifts when at least this share of features drift ..."
    )
    score_js_threshold: float = Field(
        default=0.1, gt=0, le=1, description="... or the Jensen-Shannon distance of the model's scores reaches this."
    )
    decay_tolerance: float = Field(
        default=0.03,
        ge=0,
        description="With labels: performance decays when the champion's gate metric falls more than this below "
        "its held-out score at training (for rmse and mae, a share of that score: they carry the target's units).",
    )
    null_rate_tolerance: float = Field(
        default=0.05, ge=0, le=1, description="Flag a column whose null rate grows by more."
    )
    new_category_tolerance: float = Field(
        default=0.01, ge=0, le=1, description="Flag a column when more than this share of rows hold unseen categories."
    )
    labels: str | None = Field(
        default=None,
        description="Where labels arrive: a file, folder or glob of id + target rows ('{home}' expands), joined on "
        "the id column to windows without labels of their own (e.g. prediction-log windows); null: none.",
    )
    estimated_decay: bool = Field(
        default=True,
        description="Without labels, a classifier's metric is estimated from its probabilities (CBPE) and an "
        "estimated drop counts toward retraining like a measured one; false: the estimate is only reported.",
    )
    windows: int = Field(
        default=3, ge=1, description="Retrain when drift or decay held in `min_windows` of the last `windows` ..."
    )
    min_windows: int = Field(default=2, ge=1, description="... windows judged against the current champion.")
    retrain: Literal["inline", "event", "off"] = Field(
        default="inline",
        description="On a retraining verdict: 'inline' runs the training flow at once, 'event' emits the Prefect "
        "event `mlops.retrain.requested` (what `mlops deploy`'s training trigger listens for), 'off' only reports.",
    )

    @field_validator("min_windows")
    @classmethod
    def _fits_windows(cls, value: int, info: Any) -> int:
        windows = info.data.get("windows")
        if windows is not None and value > windows:
            raise ValueError(f"min_windows ({value}) cannot exceed windows ({windows})")
        return value


class ScheduleConfig(_Section):
    cron: str | None = Field(default=None, description="Cron expression; null: no schedule.")


class ScoringScheduleConfig(ScheduleConfig):
    input: str | None = Field(default=None, description="File scored on each run ('{home}' expands).")
    output: str | None = Field(default=None, description="Output file ('{date}' expands to the run's date).")


class LandingConfig(_Section):
    folder: str | None = Field(
        default="{home}/landing/{model}",
        description="New data files dropped here start a training run ('{model}': the model's name); null: off.",
    )
    poll_seconds: float = Field(default=60.0, ge=1, description="How often the folder is checked.")


class DeployConfig(_Section):
    """`mlops deploy`: the Prefect deployments it serves, their schedules and triggers."""

    timezone: str = Field(default="UTC", description="Time zone of the cron schedules.")
    training: ScheduleConfig = ScheduleConfig(cron="0 3 * * 1")
    monitoring: ScheduleConfig = ScheduleConfig(cron="0 * * * *")
    scoring: ScoringScheduleConfig = ScoringScheduleConfig()
    drift_trigger: bool = Field(
        default=True, description="Run training when the monitor emits `mlops.retrain.requested`."
    )
    landing: LandingConfig = LandingConfig()


class PrefectConfig(_Section):
    server: Literal["local", "ephemeral"] = Field(
        default="local",
        description="Without PREFECT_API_URL: 'local' starts (once) and reuses a Prefect server under the "
        "workspace; 'ephemeral' starts a temporary server for each command.",
    )
    idle_minutes: float | None = Field(
        default=30.0,
        gt=0,
        description="The local server exits by itself after this long without a request (null: runs until "
        "`mlops server stop`); the next command starts it again.",
    )
    heartbeat_seconds: int | None = Field(
        default=None,
        ge=30,
        description="Flow-run heartbeat interval. Heartbeats only matter to a server that runs a "
        "zombie-flow automation; off by default, because stopping the heartbeat thread adds up to 1 s "
        "to every flow run.",
    )


AlertEvent = Literal[
    "rejected_batch",
    "drift_alarm",
    "retraining_started",
    "retraining_finished",
    "candidate_held",
    "promoted",
    "approval_pending",
    "approved",
    "rejected",
    "rollback",
    "challenger_started",
    "challenger_promoted",
    "challenger_retired",
    "outside_move",
    "failed_run",
]


class WebhookConfig(_Section):
    """One receiver of alerts: an HTTP endpoint that takes a JSON POST."""

    url: str = Field(
        description="Where alerts are POSTed. `${VAR}` expands from the environment at send time: keep secret "
        "URLs (a Slack webhook) out of files that way."
    )
    format: Literal["json", "slack"] = Field(
        default="json", description="'json': the event as a JSON object; 'slack': a Slack-compatible message."
    )
    events: tuple[AlertEvent | Literal["*"], ...] = Field(
        default=("*",), description="The events sent to this receiver ('*': all of them)."
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra request headers, e.g. Authorization: 'Bearer ${TOKEN}'."
    )
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    retries: int = Field(default=3, ge=0, le=10, description="Attempts after the first, with doubling backoff.")
    backoff_seconds: float = Field(default=1.0, ge=0, le=60, description="Wait before the first retry.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://", "${")):
            raise ValueError(f"a webhook url starts with http:// or https:// (or is a ${{VAR}}), not {value[:40]!r}")
        return value

    def wants(self, event: str) -> bool:
        return "*" in self.events or event in self.events


class AlertsConfig(_Section):
    """Webhooks told about what happens to a model; a failed delivery is logged, never fatal."""

    webhooks: tuple[WebhookConfig, ...] = Field(
        default=(), description="Receivers of alerts (a model's file replaces the project's list)."
    )
    wait_seconds: float = Field(
        default=30.0,
        ge=0,
        le=600,
        description="At exit, a command waits at most this long for alerts still being delivered.",
    )
