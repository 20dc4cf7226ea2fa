"""MLflow adapter: tracking runs, logging the pipeline, and the registry's `champion` alias.

* `connection`: which tracking store (a user's server or the workspace's SQLite file) and its experiments;
* `runs`: what a pipeline run records (params, metrics, tags, artifacts, nested trials);
* `model_logging`: a fitted pipeline logged as an MLflow model;
* `aliases`: registered versions and the `champion` alias (promotion, rollback);
* `history`: the audit trail of every alias move, kept as registered-model tags;
* `loading`: models loaded without running foreign code, and local copies of them.
"""

from __future__ import annotations

from components.tracking.registry.aliases import (
    CHAMPION,
    PREVIOUS_CHAMPION,
    Audit,
    ChampionInfo,
    ChampionMoved,
    Rollback,
    alias_lock,
    check_trail,
    get_champion,
    list_models,
    note_move,
    register_model,
    rollback,
    set_champion,
    tag_version,
)
from components.tracking.registry.aliases import _alias_version as _alias_version  # tests read aliases with it
from components.tracking.registry.connection import (
    RegistryError,
    TrackingUnreachable,
    check_store,
    connect,
    ensure_experiment,
    is_embedded,
    tracking_uri,
)
from components.tracking.registry.loading import (
    SAFE_FORMAT,
    TRUSTED_TYPE_PREFIXES,
    TRUSTED_TYPES,
    UnsafeModel,
    download_artifact,
    download_model,
    load_model,
    load_model_folder,
    trusted_types,
)
from components.tracking.registry.model_logging import (
    MODEL_ARTIFACT,
    RUNTIME_PACKAGES,
    SIGNATURE_SAMPLE_ROWS,
    log_model,
    pip_requirements,
    signature_frame,
    signature_sample,
)
from components.tracking.registry.runs import (
    end_run,
    flatten_config,
    git_commit,
    log_artifact,
    log_child_run,
    log_dict,
    log_figure,
    log_metrics,
    log_params,
    log_text,
    log_validation_run,
    run_metrics,
    set_tags,
    start_run,
)

__all__ = [
    "CHAMPION",
    "MODEL_ARTIFACT",
    "PREVIOUS_CHAMPION",
    "RUNTIME_PACKAGES",
    "SAFE_FORMAT",
    "SIGNATURE_SAMPLE_ROWS",
    "TRUSTED_TYPES",
    "TRUSTED_TYPE_PREFIXES",
    "Audit",
    "ChampionInfo",
    "ChampionMoved",
    "RegistryError",
    "Rollback",
    "TrackingUnreachable",
    "UnsafeModel",
    "alias_lock",
    "check_store",
    "check_trail",
    "connect",
    "download_artifact",
    "download_model",
    "end_run",
    "ensure_experiment",
    "flatten_config",
    "get_champion",
    "git_commit",
    "is_embedded",
    "list_models",
    "load_model",
    "load_model_folder",
    "log_artifact",
    "log_child_run",
    "log_dict",
    "log_figure",
    "log_metrics",
    "log_model",
    "log_params",
    "log_text",
    "log_validation_run",
    "note_move",
    "pip_requirements",
    "register_model",
    "rollback",
    "run_metrics",
    "set_champion",
    "set_tags",
    "signature_frame",
    "signature_sample",
    "start_run",
    "tag_version",
    "tracking_uri",
    "trusted_types",
]
