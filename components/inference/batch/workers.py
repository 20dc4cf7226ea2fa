"""Batch scoring's models on workers: a model folder loaded once per process."""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

from components.inference.scoring import ModelSchema

_MODELS: dict[str, tuple[Any, ModelSchema]] = {}
_MODELS_LOCK = threading.Lock()


def load_model_dir(model_dir: Path) -> tuple[Any, ModelSchema]:
    """A downloaded model folder, loaded once per process (each Dask worker loads it once)."""
    from components.tracking.registry import load_model

    key = str(Path(model_dir).resolve())
    with _MODELS_LOCK:
        if key not in _MODELS:
            model = load_model(key)
            _MODELS[key] = (model, ModelSchema.of(model))
        return _MODELS[key]


def rows_per_second(rows: int, seconds: float) -> float:
    return rows / seconds if seconds > 0 else math.inf
