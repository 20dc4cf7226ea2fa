"""The tables the contract benchmark screens: real public ones (`tables.py`) and the generated loans."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tables  # the sibling module, found from any working directory

from components.core.config import PipelineConfig
from components.simulation.simulate import ID_COLUMN, TARGET, generate_batches


@dataclass(frozen=True)
class Source:
    name: str
    task: str
    target: str
    frame: pd.DataFrame
    id_column: str | None = None


def load_sources(names: list[str], seed: int) -> list[Source]:
    found = []
    for name in names:
        if name == "loans":
            batches = generate_batches(8, 5_000, seed=seed)
            frame = pd.concat([b.frame for b in batches], ignore_index=True)
            found.append(Source("loans", "binary", TARGET, frame, ID_COLUMN))
            continue
        table = tables.find(name)
        frame = tables.load(table).drop(columns=list(table.drop), errors="ignore")
        found.append(Source(name, table.task, table.target, frame))
    return found


def config_for(source: Source) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {"task": source.task, "data": {"name": source.name, "target": source.target, "id_column": source.id_column}}
    )
