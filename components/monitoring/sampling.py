"""Labels where the online test needs them, without biasing it: a sample with known probabilities.

During a rollout, most served rows tell champion and challenger apart by nothing: where the two
answer alike, the paired loss difference d = loss(champion) - loss(challenger) is (near) zero
whatever the label. Labelling those is wasted work; labelling only the rows where they disagree
would bias the test (those are not a sample of the traffic). The label queue therefore draws
rows with *recorded inclusion probabilities*: each row i considered is picked (randomized
systematic sampling: exactly K rows, each with its own probability) with probability

    pi_i = K * (floor / N + (1 - floor) * w_i / sum(w))     (capped at 1, the excess spread over the rest)

where w_i is its priority (disagreement, uncertainty), K the expected number of picks, N the rows
considered, and the `floor` share keeps every pi_i above K * floor / N (a defensive mixture: no row
is impossible to pick, so no 1/pi weight explodes). The queue writes a *design* file beside the
queue file: every row considered, its pi_i and whether it was picked.

The test then uses, for each row considered, the Horvitz-Thompson term z_i = I_i d_i / pi_i (I_i: it
was picked and labelled): E[z_i] = d_i whatever the priorities were, so the mean of the z's
estimates the mean difference over the served rows, and the always-valid test runs on them as on
plain differences, with rows the two versions agree on costing no label. Picks left blank when the
file comes back count as missing at random within their draw: each labelled pick's pi is scaled by
the draw's response rate (labelled picks / picks). A draw none of whose picks has a label yet
waits.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

INCLUSION, PICKED, ID = "_inclusion", "_picked", "_id"
DESIGN_SUFFIX = ".design.parquet"


def inclusion_probabilities(weights: np.ndarray, size: float, floor: float = 0.1) -> np.ndarray:
    """Each row's probability of being picked, summing to `size` (at most the number of rows):
    proportional to `weights` with a `floor` share spread evenly, none above 1."""
    w = np.nan_to_num(np.asarray(weights, dtype="float64"), nan=0.0).clip(min=0.0)
    n = len(w)
    if n == 0:
        return w
    if not 0 < floor <= 1:
        raise ValueError(f"the floor share must be in (0, 1], got {floor}")
    target = min(float(size), float(n))
    share = w / w.sum() if w.sum() > 0 else np.full(n, 1.0 / n)
    mixed = floor / n + (1 - floor) * share
    pi = np.zeros(n)
    free = np.ones(n, dtype=bool)
    left = target
    while free.any():  # cap at 1 and spread what the capped rows leave over the others
        scaled = left * mixed[free] / mixed[free].sum()
        over = scaled >= 1.0
        if not over.any():
            pi[free] = scaled
            break
        index = np.flatnonzero(free)[over]
        pi[index] = 1.0
        free[index] = False
        left = target - pi[~free].sum()
    return pi


def draw(pi: np.ndarray, seed: int, salt: str = "") -> np.ndarray:
    """Randomized systematic sampling: the rows in a random order, their probabilities laid end to
    end on a line, and a row picked where a point of u, u + 1, u + 2, ... (u uniform in [0, 1)) falls
    in its stretch. Each row is picked with exactly its probability, and exactly sum(pi) rows are
    (an independent draw per row would sometimes pick none of a small queue)."""
    rng = np.random.default_rng([seed, zlib.crc32(salt.encode())])
    order = rng.permutation(len(pi))
    end = np.cumsum(np.asarray(pi, dtype="float64")[order])
    start = end - np.asarray(pi, dtype="float64")[order]
    u = rng.random()
    picked = np.zeros(len(pi), dtype=bool)
    picked[order] = np.floor(end - u + 1e-9) > np.floor(start - u + 1e-9)
    return picked


def design_path(queue_file: Path, folder: Path) -> Path:
    """Where the design of a queue file is kept (the workspace's queue folder, wherever the file went)."""
    return folder / f"{queue_file.stem}{DESIGN_SUFFIX}"


def write_design(path: Path, ids: pd.Series, pi: np.ndarray, picked: np.ndarray) -> None:
    from components.core.files import staged

    frame = pd.DataFrame({ID: ids.astype(str).to_numpy(), INCLUSION: pi, PICKED: picked})
    with staged(path) as staging:
        frame.to_parquet(staging, index=False)


def read_designs(folder: Path) -> list[pd.DataFrame]:
    """Every draw's design in the queue folder, oldest first."""
    return [pd.read_parquet(p) for p in sorted(folder.glob(f"*{DESIGN_SUFFIX}"))] if folder.is_dir() else []


@dataclass(frozen=True)
class Weighted:
    """The Horvitz-Thompson terms of the draws whose picks have labels."""

    terms: np.ndarray  # one per row considered (zero unless a labelled pick)
    labels: int  # labelled picks used
    draws: int  # draws used
    waiting: int  # draws none of whose picks has a label yet

    def note(self) -> str:
        if not self.draws:
            return f"; {self.waiting} label-queue draw(s) waiting for labels" if self.waiting else ""
        return (
            f"; {self.labels:,} label(s) from {self.draws} label-queue draw(s) stand for {len(self.terms):,} "
            f"served rows (weighted by 1/inclusion probability)"
        )


def weighted_terms(designs: list[pd.DataFrame], differences: dict[str, float], eligible: set[str]) -> Weighted:
    """z_i = I_i d_i / (pi_i * response rate) for every row a draw considered among `eligible` ids
    (those both versions answered, without a label of their own); `differences`: d of each labelled
    pick, by id."""
    terms, labels, used, waiting = [], 0, 0, 0
    for design in designs:
        rows = design[design[ID].isin(eligible)]
        picks = rows[rows[PICKED].astype(bool)]
        if picks.empty:
            continue
        answered = picks[ID].isin(differences.keys()).to_numpy()
        if not answered.any():
            waiting += 1
            continue
        response = answered.mean()
        z = np.zeros(len(rows))
        where = rows[PICKED].astype(bool).to_numpy() & rows[ID].isin(differences.keys()).to_numpy()
        d = np.asarray([differences[i] for i in rows.loc[where, ID]], dtype="float64")
        z[where] = d / (rows.loc[where, INCLUSION].to_numpy(dtype="float64") * response)
        terms.append(z)
        labels += int(where.sum())
        used += 1
    return Weighted(np.concatenate(terms) if terms else np.zeros(0), labels, used, waiting)
