"""The fast inference path: a fitted model compiled into array operations at load, proven to answer
as its scikit-learn pipeline does before it is used, with the pipeline as the named fallback."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from components.inference.compiled.equivalence import TOLERANCE, Equivalence, check_equivalence
from components.inference.compiled.errors import NotCompiled
from components.inference.compiled.model import CompiledModel, compile_model
from components.inference.compiled.trees import WALK_MAX_ROWS

logger = logging.getLogger(__name__)

COMPILED, PIPELINE = "compiled", "pipeline"


@dataclass(frozen=True)
class InferencePath:
    """Which path answers a model's requests, and why."""

    compiled: CompiledModel | None
    reason: str | None = None  # why the pipeline answers instead
    equivalence: Equivalence | None = None
    compile_seconds: float = 0.0

    @property
    def name(self) -> str:
        return COMPILED if self.compiled is not None else PIPELINE

    def describe(self) -> dict[str, Any]:
        check = self.equivalence
        return {
            "path": self.name,
            "fallback_reason": self.reason,
            "checked_rows": check.rows if check else None,
            "max_difference": check.max_difference if check else None,
            "tolerance": TOLERANCE,
            "compile_seconds": round(self.compile_seconds + (check.seconds if check else 0.0), 3),
        }


def prepare_path(
    model: Any, numeric: Sequence[str], categorical: Sequence[str], reference: pd.DataFrame | None = None
) -> InferencePath:
    """Compile the model and check it against the pipeline; the pipeline when either fails."""
    started = time.perf_counter()
    try:
        compiled = compile_model(model, numeric, categorical)
    except NotCompiled as exc:
        return InferencePath(None, f"not compiled: {exc}", None, time.perf_counter() - started)
    except (AttributeError, TypeError, ValueError, IndexError) as exc:  # a fitted model unlike the ones known
        return InferencePath(None, f"not compiled: {type(exc).__name__}: {exc}", None, time.perf_counter() - started)
    seconds = time.perf_counter() - started
    try:
        check = check_equivalence(model, compiled, numeric, categorical, reference)
    except (AttributeError, TypeError, ValueError, IndexError) as exc:
        return InferencePath(None, f"equivalence check failed: {type(exc).__name__}: {exc}", None, seconds)
    if not check.ok:
        return InferencePath(None, check.reason, check, seconds)
    return InferencePath(compiled, None, check, seconds)


__all__ = [
    "COMPILED",
    "PIPELINE",
    "TOLERANCE",
    "WALK_MAX_ROWS",
    "CompiledModel",
    "Equivalence",
    "InferencePath",
    "NotCompiled",
    "check_equivalence",
    "compile_model",
    "prepare_path",
]
