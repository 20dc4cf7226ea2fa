"""Labels where the online test needs them, without biasing it: a sample with known probabilities.

During a rollout, most served rows tell champion and challenger apart by nothing: where the two
answer alike, the paired loss difference d = loss(champion) - loss(challenger) is (near) zero
whatever the label. Labelling those is wasted work; labelling only the rows where they disagree
would bias the test (those are not a sample of the traffic). The label queue therefore draws
rows with *recorded inclusion probabilities*: each row i considered is picked (randomized
systematic sampling: exactly K rows, each with its own probability) with probability

    pi_i = K * (floor / N + (1 - floor) * w_i / sum(w))     (capped at 1, the excess spread over the rest)

where w_i is its priority (how far apart the two versions' losses are expected to be), K the
expected number of picks, N the rows considered, and the `floor` share keeps every pi_i above
K * floor / N (a defensive mixture: no row is impossible to pick, so no 1/pi weight explodes).
The queue writes a *design* file beside the queue file: every row considered, its pi_i and
whether it was picked.

The test then takes one term per labelled pick, y = d * k / (N * pi) (N rows considered, k = sum
of their pi): the mean of a draw's y is its Horvitz-Thompson estimate of the mean difference over
the N rows, whatever the priorities were, and a row picked with the uniform probability k/N counts
as itself. The y's enter the always-valid test one per label, as plain differences do (importance
sampling, read as sampling with replacement: the variance it implies is, if anything, too large),
so rows the two versions agree on cost no label and the test counts labels, not rows. Picks left
blank when the file comes back count as missing at random within their draw. A draw none of whose
picks has a label yet waits.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import datetime
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
    stretch = np.asarray(pi, dtype="float64")[order]
    end = np.cumsum(stretch)
    start = end - stretch
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


def read_designs(folder: Path, since: datetime | None = None) -> list[pd.DataFrame]:
    """The draws' designs in the queue folder, oldest first; with `since`, only those written from
    then on (a draw made before a challenger started holds none of the rows both versions answered)."""
    if not folder.is_dir():
        return []
    paths = sorted(folder.glob(f"*{DESIGN_SUFFIX}"))
    if since is not None:
        paths = [p for p in paths if p.stat().st_mtime >= since.timestamp()]
    return [pd.read_parquet(p) for p in paths]


def importance_terms(d: np.ndarray, pi: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """The test's term of each labelled pick, y = d * k / (N * pi): `pi` over the N rows a draw
    considered (k = sum(pi)), `chosen` the labelled picks among them and `d` their differences."""
    return np.asarray(d, dtype="float64") * pi.sum() / (len(pi) * pi[chosen])


@dataclass(frozen=True)
class Weighted:
    """The test's terms from the label-queue draws whose picks have labels: one per labelled pick."""

    terms: np.ndarray
    considered: int  # distinct served rows the draws considered
    draws: int  # draws used
    waiting: int  # draws none of whose picks has a label yet

    def note(self) -> str:
        if not self.draws:
            return f"; {self.waiting} label-queue draw(s) waiting for labels" if self.waiting else ""
        return (
            f"; {len(self.terms):,} label(s) from {self.draws} label-queue draw(s) among {self.considered:,} "
            "served rows, each weighted by its inclusion probability"
        )


def weighted_terms(designs: list[pd.DataFrame], differences: dict[str, float], eligible: set[str]) -> Weighted:
    """One term per labelled pick, y = d * k / (N * pi), for the draws among `eligible` ids (those
    both versions answered, without a label of their own): N rows considered, k = sum(pi) picks
    expected among them. The mean of a draw's y is its Horvitz-Thompson estimate of the mean
    difference over those N rows (picks left blank taken as missing at random), and the y's enter
    the test one per label, as a plain difference does (importance sampling: a row picked with
    probability k/N, as at random, counts as itself). `differences`: d of each labelled pick, by id."""
    terms: list[np.ndarray] = []
    considered: set[str] = set()
    used = waiting = 0
    for design in designs:
        rows = design[design[ID].isin(eligible)]
        chosen = rows[PICKED].astype(bool).to_numpy()
        if not chosen.any():
            continue
        answered = chosen & rows[ID].isin(differences.keys()).to_numpy()
        if not answered.any():
            waiting += 1
            continue
        d = np.asarray([differences[i] for i in rows.loc[answered, ID]], dtype="float64")
        terms.append(importance_terms(d, rows[INCLUSION].to_numpy(dtype="float64"), answered))
        considered.update(rows[ID])
        used += 1
    return Weighted(np.concatenate(terms) if terms else np.zeros(0), len(considered), used, waiting)
