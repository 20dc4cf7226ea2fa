"""Batch scoring's models on workers: a model folder loaded once per process."""

from __future__ import annotations

import math
import threading
from pathlib import Path

from components.inference.scoring import ServingModel, load_serving_model

_MODELS: dict[str, ServingModel] = {}
_MODELS_LOCK = threading.Lock()


def load_model_dir(model_dir: Path) -> ServingModel:
    """A downloaded model folder, loaded (and compiled, as the service does) once per process:
    each Dask worker loads it once."""
    key = str(Path(model_dir).resolve())
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = load_serving_model(key)
        return _MODELS[key]


def rows_per_second(rows: int, seconds: float) -> float:
    return rows / seconds if seconds > 0 else math.inf
