"""The continuous-training flow: extract -> validate -> prepare -> train -> evaluate -> promote."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from components import contract, registry
from components.config import PipelineConfig, dataset_name, resolve_source
from components.contract import DataRejected, ValidationReport
from components.datacard import describe_frame
from components.evaluate import compute_metrics, evaluate_model
from components.extract import ExtractionError, extract_table
from components.prepare import FeatureSpec, Split, infer_feature_spec, split_data
from components.promotion import Decision, PromotionPolicy, decide_promotion
from components.train import model_params, train_model
from components.workspace import Workspace


@dataclass(frozen=True)
class TrainingResult:
    """What a training run did; `as_json` is the CLI's machine-readable last line."""

    run_id: str
    model_name: str
    model_version: str | None
    promoted: bool
    reason: str
    metrics: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class Prepared:
    spec: FeatureSpec
    split: Split


def _retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only failures that may pass on a second try (I/O, a database that did not answer)."""
    try:
        state.result()
    except ExtractionError as exc:
        return exc.transient
    except OSError:
        return True
    except Exception:  # noqa: BLE001 - anything else fails the same way again
        return False
    return False


# Frames stay in memory between tasks of one flow run: NO_CACHE avoids hashing them.
@task(
    name="extract",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=_retry_transient,
    cache_policy=NO_CACHE,
)
def extract_task(source: str, query: str | None) -> pd.DataFrame:
    frame = extract_table(source, query)
    get_run_logger().info("extracted %d rows x %d columns from %s", len(frame), frame.shape[1], source)
    return frame


@task(name="validate", cache_policy=NO_CACHE)
def validate_task(
    frame: pd.DataFrame, config: PipelineConfig, dataset: str, workspace: Workspace, run_id: str
) -> ValidationReport:
    """Validate against the dataset's suite, creating it from this data when there is none."""
    logger = get_run_logger()
    path = contract.suite_path(config.validation.suite_dir, dataset)
    if not path.exists():
        if not config.validation.create_missing_suite:
            raise contract.ContractError(
                f"no suite for dataset {dataset!r} at {path}; create one with create_missing_suite or by hand"
            )
        suite = contract.profile_suite(
            frame,
            dataset,
            target=config.data.target,
            id_column=config.data.id_column,
            numeric_tolerance=config.validation.numeric_tolerance,
            null_rate_slack=config.validation.null_rate_slack,
        )
        contract.save_suite(suite, path)
        logger.warning("no suite for %r yet: profiled this data into %s; review it and commit it", dataset, path)
    suite = contract.load_suite(path)
    report = contract.Validator(workspace.gx_dir).validate(frame, suite, run_name=run_id)
    registry.log_dict(run_id, report.as_dict(), "validation/report.json")
    registry.log_dict(run_id, suite, f"validation/{path.name}")
    report_path = workspace.reports / f"validation_{dataset}_{run_id}.json"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report.as_dict(), indent=2, default=str))
    if not report.success:
        raise DataRejected(report, report_path)
    logger.info(report.summary())
    return report


@task(name="prepare", cache_policy=NO_CACHE)
def prepare_task(frame: pd.DataFrame, config: PipelineConfig) -> Prepared:
    data = config.data
    assert data.target is not None
    spec = infer_feature_spec(frame, data.target, data.id_column, data.time_column, data.drop_columns)
    split = split_data(frame, spec, config.split.test_size, config.seed)
    get_run_logger().info(
        "features: %d numeric, %d categorical; split %d train / %d test rows",
        len(spec.numeric),
        len(spec.categorical),
        len(split.X_train),
        len(split.X_test),
    )
    return Prepared(spec, split)


@task(name="train", cache_policy=NO_CACHE)
def train_task(prepared: Prepared, config: PipelineConfig) -> Any:
    split = prepared.split
    return train_model(split.X_train, split.y_train, prepared.spec, config.model, config.seed)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(model: Any, prepared: Prepared, run_id: str) -> dict[str, float]:
    split = prepared.split
    metrics = evaluate_model(model, split.X_test, split.y_test)
    train_metrics = evaluate_model(model, split.X_train, split.y_train)
    registry.log_metrics(
        run_id, {**{f"test_{k}": v for k, v in metrics.items()}, **{f"train_{k}": v for k, v in train_metrics.items()}}
    )
    get_run_logger().info("held-out metrics: %s", ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))
    return metrics


# No retries: logging and registering are not idempotent, a retry would add a second version.
@task(name="promote", cache_policy=NO_CACHE)
def promote_task(
    model: Any,
    prepared: Prepared,
    metrics: dict[str, float],
    config: PipelineConfig,
    model_name: str,
    run_id: str,
    fingerprint: str,
) -> tuple[str, Decision]:
    """Register the candidate, score the champion on the same rows, and apply the gate."""
    logger = get_run_logger()
    client = registry.connect(Workspace.at(config.home))
    split = prepared.split
    model_uri = registry.log_model(run_id, model, split.X_train)
    version = registry.register_model(model_uri, model_name, tags={"data_fingerprint": fingerprint, "run_id": run_id})
    metric = config.promotion.metric
    champion = registry.get_champion(client, model_name)
    champion_score: float | None = None
    note = ""
    if champion is not None:
        try:
            incumbent = registry.load_model(champion.uri)
            champion_metrics = compute_metrics(split.y_test, incumbent.predict_proba(split.X_test), incumbent.classes_)
            champion_score = champion_metrics.get(metric)
        except (ValueError, KeyError) as exc:
            note = f"champion v{champion.version} could not score the held-out rows ({exc}); "
    decision = decide_promotion(
        metrics.get(metric), champion_score, PromotionPolicy(metric=metric, min_score=config.promotion.min_score)
    )
    if champion_score is not None:
        registry.log_metrics(run_id, {f"champion_{metric}_same_rows": champion_score})
    if note:
        decision = replace(decision, reason=note + decision.reason)
    registry.log_dict(run_id, decision.as_dict(), "decision.json")
    registry.tag_version(
        client, model_name, version, {"decision": decision.reason, "promoted": str(decision.promote).lower()}
    )
    if decision.promote:
        registry.set_champion(client, model_name, version, {"promoted_at": pd.Timestamp.now(tz="UTC").isoformat()})
        logger.info("promoted %s v%s to champion: %s", model_name, version, decision.reason)
    else:
        logger.info("kept the champion; %s v%s not promoted: %s", model_name, version, decision.reason)
    return version, decision


@flow(name="training_flow")
def training_flow(config: PipelineConfig) -> TrainingResult:
    """Train a candidate on the configured data and promote it if it beats the champion."""
    workspace = Workspace.at(config.home)
    source = resolve_source(config, workspace.root)
    dataset = dataset_name(config)
    client = registry.connect(workspace)
    run_id = registry.start_run(
        client,
        registry.ensure_experiment(client, dataset, workspace),
        tags={
            "dataset": dataset,
            "prefect.flow_run_id": str(flow_run.id),
            **({"mlflow.source.git.commit": commit} if (commit := registry.git_commit()) else {}),
        },
        params={"data.source": source, **registry.flatten_config(config)},
    )
    try:
        frame = extract_task(source, config.data.query)
        card = describe_frame(frame, config.data.time_column)
        registry.log_dict(run_id, {**card, "source": source, "assumptions": list(config.assumptions)}, "data_card.json")
        registry.set_tags(run_id, {"data.fingerprint": card["fingerprint"]})
        validate_task(frame, config, dataset, workspace, run_id)
        prepared = prepare_task(frame, config)
        model = train_task(prepared, config)
        registry.log_params(run_id, model_params(model))
        metrics = evaluate_task(model, prepared, run_id)
        version, decision = promote_task(model, prepared, metrics, config, dataset, run_id, card["fingerprint"])
    except DataRejected:
        registry.end_run(client, run_id, "FAILED", {"outcome": "rejected"})
        raise
    except BaseException:
        registry.end_run(client, run_id, "FAILED", {"outcome": "error"})
        raise
    registry.end_run(client, run_id, "FINISHED", {"outcome": "promoted" if decision.promote else "held_back"})
    return TrainingResult(
        run_id=run_id,
        model_name=dataset,
        model_version=version,
        promoted=decision.promote,
        reason=decision.reason,
        metrics=metrics,
    )
