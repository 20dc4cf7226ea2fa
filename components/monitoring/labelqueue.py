"""The label queue: the served rows whose labels would teach the most, written for people to label.

Labels cost people's time, so the rows to label are chosen, not sampled. A classifier's rows are
ranked by how unsure the champion was: a binary row by how close its probability came to the
decision threshold (on the probability's scale: at the threshold it scores 1, at 0 or 1 it scores
0), a multiclass row by one minus the probability of the class it chose. A regressor logs no
confidence, so its rows are spread evenly over the range of its answers instead (the extremes
first, then the quantiles between): what it predicts everywhere gets checked, not only where it is
common. During a rollout (the log holds the challenger's answers too) the rows are for the
challenger's online test: where the two versions answer alike a label tells it nothing, so they
are drawn with probabilities that grow with how far apart the two versions' losses are expected to
be (`expected_gap`), recorded in a design file beside the queue file, so the test can weight their
labels by 1/probability (`components.monitoring.sampling`).

Each id is asked for once: rows whose id already has a label (where labels arrive) or is waiting in
an earlier queue file are left out, and an id scored several times counts once (its latest answer).
The queue file is a CSV a person can fill in: the id, an empty target column, the features the model
saw, then its answer (`_answer`, `_probability`, `_model_version`, `_logged_at`) and why it was
picked (`_why`). `ingest` takes it back: its labelled rows become labels for monitoring and, where
the data source is a folder of batches, a new batch for the next training run.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from components.core.config import PipelineConfig
from components.core.files import staged
from components.core.workspace import Workspace
from components.data.extract import ExtractionError, resolve_files
from components.inference.predlog import (
    LOGGED_AT,
    MODEL_VERSION,
    PREDICTION,
    PROBABILITY,
    REQUEST_ID,
    SHADOW_COLUMNS,
    SHADOW_PREDICTION,
    SHADOW_PROBABILITY,
)
from components.monitoring import sampling
from components.monitoring.monitor.decay import INFORMATIVE, RANDOM, SELECTION, WEIGHTED
from components.monitoring.monitor.reference import MonitoringError

ANSWER, WHY = "_answer", "_why"
QUEUE_PREFIX, LABELS_PREFIX, BATCH_PREFIX = "queue-", "labels-", "labelled-"
HELD_FOR_TRAINING = "_held-for-training.parquet"  # "_": not read as labels


@dataclass(frozen=True)
class QueueResult:
    """What `write_queue` picked: the file, its rows and what was left out."""

    path: Path | None
    rows: int
    candidates: int  # distinct ids in the log, before those labelled or queued were left out
    labelled: int  # ids left out: they already have a label
    queued: int  # ids left out: waiting in an earlier queue file
    strategy: str


@dataclass(frozen=True)
class IngestResult:
    """What `ingest` took back from a filled-in queue file."""

    labelled: int
    blank: int  # rows still without a label (left for later)
    labels_path: Path | None
    batch_path: Path | None
    batch_note: str  # why no training batch was written, or where it went


def label_sources(config: PipelineConfig, model_name: str) -> list[str]:
    """Where a model's labels arrive: `monitoring.labels` (when set) and the workspace's folder of
    labels taken back from the queue."""
    configured = config.monitoring.labels
    own = str(Workspace.at(config.home).labels / model_name)
    return [configured.replace("{home}", str(config.home)), own] if configured else [own]


def label_files(sources: Sequence[str]) -> list[Path]:
    """The label files at these sources (those not there yet are skipped)."""
    files: list[Path] = []
    for source in sources:
        try:
            files.extend(resolve_files(source))
        except ExtractionError:
            continue
    return files


def stamp(at: datetime | None = None) -> str:
    return f"{(at or datetime.now(UTC)):%Y%m%dT%H%M%S%fZ}"


def binary_threshold(log: pd.DataFrame) -> float:
    """The decision threshold the log's answers imply: between the highest probability answered
    negative and the lowest answered positive (0.5 when only one class was answered), among the
    answers of the version logged last (another version may have had another threshold)."""
    if MODEL_VERSION in log.columns and LOGGED_AT in log.columns and len(log):
        latest = log.sort_values(LOGGED_AT, kind="stable")[MODEL_VERSION].iloc[-1]
        log = log[log[MODEL_VERSION] == latest]
    groups = log.groupby(PREDICTION, sort=False)[PROBABILITY]
    if groups.ngroups != 2:
        return 0.5
    means = groups.mean().sort_values()
    negative, positive = (log.loc[log[PREDICTION] == label, PROBABILITY] for label in means.index)
    return float((negative.max() + positive.min()) / 2)


def uncertainty(log: pd.DataFrame, task: str, threshold: float | None = None) -> tuple[pd.Series, str]:
    """Each row's uncertainty in [0, 1] (higher: label it first) and the strategy's name; a binary
    model's `threshold` defaults to the one `log`'s answers imply."""
    p = log[PROBABILITY].astype("float64")
    if task == "binary":
        t = binary_threshold(log) if threshold is None else threshold
        scale = np.where(p >= t, 1 - t, t)
        return pd.Series(1 - np.abs(p - t) / np.maximum(scale, 1e-12), index=log.index), (
            f"least confident (closest to the decision threshold {t:.3f})"
        )
    if task == "multiclass":
        return 1 - p, "least confident (lowest probability of the chosen class)"
    return _spread(
        log[PREDICTION].astype("float64")
    ), "spread over the predicted range (a regressor logs no confidence)"


def disagreement(log: pd.DataFrame, task: str) -> pd.Series:
    """How far the served answer and the other version's (during a rollout) are apart, in [0, 1]
    (0 where the other version did not answer): different classes count half (all, for multiclass,
    whose probabilities are of different classes), the probability gap the rest; a regressor's gap as
    a share of the served answers' range."""
    other = log[SHADOW_PREDICTION]
    answered = other.notna()
    if task == "regression":
        served = pd.to_numeric(log[PREDICTION], errors="coerce")
        gap = (served - pd.to_numeric(other, errors="coerce")).abs()
        span = float(served.max() - served.min()) or 1.0
        value = (gap / span).clip(0, 1)
    else:
        differ = (log[PREDICTION].astype(str) != other.astype(str)).astype("float64")
        gap = (log[PROBABILITY] - pd.to_numeric(log[SHADOW_PROBABILITY], errors="coerce")).abs().fillna(0)
        value = differ.where(differ > 0, 0.5 * gap) if task == "multiclass" else 0.5 * differ + 0.5 * gap
    return value.where(answered, 0.0).astype("float64")


def expected_gap(log: pd.DataFrame, task: str) -> pd.Series:
    """How far apart the two versions' losses are expected to be on each row, whatever its label, in
    [0, 1): for a binary model g = sqrt(E[d^2]), d the log-loss difference and the label drawn from
    the mean of both probabilities (0 where they agree: labelling the row tells the online test
    nothing), saturated as g / (g + median g) so that a few extreme probabilities do not take every
    pick (measured on the replay: raw g needed more labels than random sampling, saturated fewer);
    otherwise (a multiclass log holds only the chosen class's probability, a regressor none)
    `disagreement`. 0 where the other version did not answer."""
    if task != "binary":
        return disagreement(log, task)
    eps = 1e-6
    served = log[PROBABILITY].astype("float64").clip(eps, 1 - eps)
    other = pd.to_numeric(log[SHADOW_PROBABILITY], errors="coerce").clip(eps, 1 - eps)
    mean = (served + other) / 2
    gap = np.sqrt(mean * np.log(other / served) ** 2 + (1 - mean) * np.log((1 - other) / (1 - served)) ** 2)
    middle = float(gap[gap > 0].median()) if (gap > 0).any() else 1.0
    return (gap / (gap + middle)).where(other.notna(), 0.0).astype("float64")


def _spread(values: pd.Series) -> pd.Series:
    """A priority that, taken highest first, visits the range of `values` coarse to fine: the two
    extremes, then the median, then the quartiles and so on (the widest gap in rank halved each time)."""
    order = np.argsort(values.to_numpy(), kind="stable")
    n = len(order)
    picks = list(dict.fromkeys([0, n - 1])) if n else []
    gaps = [(-(n - 1), 0, n - 1)] if n > 2 else []
    while gaps:
        _, low, high = heapq.heappop(gaps)
        middle = (low + high) // 2
        picks.append(middle)
        for a, b in ((low, middle), (middle, high)):
            if b - a > 1:
                heapq.heappush(gaps, (-(b - a), a, b))
    priority = np.empty(n)
    priority[order[picks]] = 1 - np.arange(len(picks)) / max(n, 1)
    return pd.Series(priority, index=values.index)


def known_ids(paths: Sequence[Path], id_column: str, target: str | None) -> set[str]:
    """Ids in these files (with a label in `target`, when given), as text."""
    ids: set[str] = set()
    for path in paths:
        frame = _read(path)
        if id_column not in frame.columns:
            continue
        if target is not None:
            if target not in frame.columns:
                continue
            frame = frame[frame[target].notna()]
        ids.update(id_text(frame[id_column]))
    return ids


def write_queue(
    log: pd.DataFrame,
    *,
    task: str,
    id_column: str,
    target: str,
    size: int,
    folder: Path,
    labels: Sequence[Path] = (),
    out: Path | None = None,
    random_share: float = 0.25,
    seed: int = 0,
) -> QueueResult:
    """The `size` rows to label written as a queue file in `folder` (or `out`): a `random_share` of
    them drawn at random (an unbiased sample, the one monitoring's realized metric uses), the rest
    the most informative."""
    if not 0 <= random_share <= 1:
        raise MonitoringError(f"the random share must be between 0 and 1, got {random_share}")
    if size < 1:
        raise MonitoringError(f"the queue size must be at least 1, got {size}")
    if id_column not in log.columns:
        raise MonitoringError(f"the prediction log lacks the id column {id_column!r}: labels are joined on it")
    rows = log[log[id_column].notna()].sort_values(LOGGED_AT, kind="stable")
    rows = rows.assign(_id=id_text(rows[id_column])).drop_duplicates("_id", keep="last")
    labelled = known_ids(labels, id_column, target)
    queued = known_ids(sorted(folder.glob(f"{QUEUE_PREFIX}*.csv")), id_column, None)
    is_labelled = rows["_id"].isin(labelled)
    is_queued = rows["_id"].isin(queued) & ~is_labelled
    counts = {"candidates": len(rows), "labelled": int(is_labelled.sum()), "queued": int(is_queued.sum())}
    threshold = binary_threshold(rows) if task == "binary" else None  # from every answer, before any is left out
    rows = rows[~(is_labelled | is_queued)]
    if rows.empty:
        return QueueResult(None, 0, strategy="nothing left to queue", **counts)
    score, strategy = uncertainty(rows, task, threshold)
    path = out or folder / f"{QUEUE_PREFIX}{stamp()}.csv"
    word = "range priority" if task == "regression" else "uncertainty"
    if SHADOW_PREDICTION in rows.columns and rows[SHADOW_PREDICTION].notna().any():
        strategy = (
            "drawn with probabilities that grow with how far apart champion and challenger are expected to "
            "be (recorded, so the online test can use them)"
        )
        score = expected_gap(rows, task)
        picked = _weighted_pick(rows.assign(_score=score), size, random_share, seed, sampling.design_path(path, folder))
        word = "expected loss gap"
    else:
        picked = _pick(rows.assign(_score=score), size, random_share, seed)
    _write_csv(_queue_frame(picked, id_column, target, word), path)
    return QueueResult(path, len(picked), strategy=strategy, **counts)


def _random_share(
    rows: pd.DataFrame, size: int, random_share: float, seed: int
) -> tuple[int, pd.DataFrame, pd.DataFrame]:
    """How many rows to pick, a random draw of `random_share` of them from all rows first (so it
    stays a sample of what was served), and the rows left for the rest."""
    n = min(size, len(rows))
    drawn = rows.sample(n=round(n * random_share) if n > 1 else 0, random_state=seed)
    return n, drawn.assign(**{SELECTION: RANDOM}), rows.drop(index=drawn.index)


def _pick(rows: pd.DataFrame, size: int, random_share: float, seed: int) -> pd.DataFrame:
    """The random share, then the highest `_score`s among the rest."""
    n, drawn, rest = _random_share(rows, size, random_share, seed)
    rest = rest.sort_values("_score", ascending=False, kind="stable")
    return pd.concat([rest.head(n - len(drawn)).assign(**{SELECTION: INFORMATIVE}), drawn])


def _weighted_pick(rows: pd.DataFrame, size: int, random_share: float, seed: int, design: Path) -> pd.DataFrame:
    """During a rollout: the random share drawn as in `_pick`, the rest drawn from the other rows
    with probabilities that grow with `_score` (`size` rows in all), its design (every row
    considered, its probability, whether picked) written to `design`."""
    n, drawn, rest = _random_share(rows, size, random_share, seed)
    pi = sampling.inclusion_probabilities(rest["_score"].to_numpy(), n - len(drawn))
    chosen = sampling.draw(pi, seed, design.name)
    sampling.write_design(design, rest["_id"], pi, chosen)
    weighted = rest.assign(**{sampling.INCLUSION: pi})[chosen].sort_values("_score", ascending=False, kind="stable")
    return pd.concat([weighted.assign(**{SELECTION: WEIGHTED}), drawn])


def _queue_frame(picked: pd.DataFrame, id_column: str, target: str, word: str) -> pd.DataFrame:
    features = [c for c in picked.columns if not c.startswith("_") and c not in (id_column, target)]
    frame = pd.DataFrame({id_column: picked[id_column].to_numpy(), target: pd.NA})
    for column in features:
        frame[column] = picked[column].to_numpy()
    frame[ANSWER] = picked[PREDICTION].to_numpy()
    frame[PROBABILITY] = picked[PROBABILITY].to_numpy()
    frame[MODEL_VERSION] = picked[MODEL_VERSION].to_numpy()
    frame[LOGGED_AT] = picked[LOGGED_AT].to_numpy()
    if REQUEST_ID in picked.columns:
        frame[REQUEST_ID] = picked[REQUEST_ID].to_numpy()
    for column in SHADOW_COLUMNS:  # during a rollout, the other version's answer beside the served one
        if column in picked.columns and picked[column].notna().any():
            frame[column] = picked[column].to_numpy()
    frame[SELECTION] = picked[SELECTION].to_numpy()
    chance = picked[sampling.INCLUSION] if sampling.INCLUSION in picked.columns else pd.Series(np.nan, picked.index)
    if chance.notna().any():
        frame[sampling.INCLUSION] = chance.to_numpy()
    frame[WHY] = [_why(word, s, how, p) for s, how, p in zip(picked["_score"], picked[SELECTION], chance, strict=True)]
    return frame


def _why(word: str, score: float, how: str, chance: float) -> str:
    if how == INFORMATIVE:
        return f"{word} {score:.3f}"
    if how == WEIGHTED:
        return f"{word} {score:.3f}, picked with probability {chance:.3f}"
    return "drawn at random: an unbiased sample for the realized metric"


def ingest(
    path: Path,
    *,
    id_column: str,
    target: str,
    time_column: str | None,
    labels_folder: Path,
    data_folder: Path | None,
    min_batch_rows: int = 1,
) -> IngestResult:
    """A filled-in queue file taken back: its labelled rows written as labels (id, target) to
    `labels_folder`, and as a batch shaped like the existing ones to `data_folder` when given."""
    frame = _read(path)
    for column in (id_column, target):
        if column not in frame.columns:
            raise MonitoringError(f"{path} lacks the column {column!r}; columns are {list(frame.columns)}")
    blank = frame[target].isna() | (frame[target].astype("string").str.strip() == "")
    filled = frame[~blank.fillna(True)].copy()
    if filled.empty:
        return IngestResult(0, len(frame), None, None, "no row has a label yet")
    filled[target] = _labels(filled[target])
    duplicated = filled[id_column].duplicated(keep=False)
    conflicting = filled[duplicated].groupby(id_column)[target].nunique()
    if (conflicting > 1).any():
        raise MonitoringError(f"id {conflicting[conflicting > 1].index[0]!r} carries different labels in {path}")
    filled = filled.drop_duplicates(id_column)
    name = f"{LABELS_PREFIX}{stamp()}.parquet"
    labels_path = labels_folder / name
    with staged(labels_path) as staging:
        filled[[c for c in (id_column, target, SELECTION) if c in filled.columns]].to_parquet(staging, index=False)
    batch_path, note = None, "no data folder: labels go to monitoring only"
    if data_folder is not None:
        held = labels_folder / HELD_FOR_TRAINING
        batch_path, note = _training_batch(filled, id_column, time_column, data_folder, held, min_batch_rows)
    return IngestResult(len(filled), int(blank.sum()), labels_path, batch_path, note)


def _training_batch(
    filled: pd.DataFrame, id_column: str, time_column: str | None, folder: Path, held: Path, min_rows: int
) -> tuple[Path | None, str]:
    """The labelled rows as a batch with the columns, types and format of the folder's last batch;
    held back in `held` (with those of earlier ingests) until there are `min_rows` of them."""
    try:
        last = resolve_files(str(folder))[-1]
    except ExtractionError:
        return None, f"no batch in {folder} to take the columns from: labels go to monitoring only"
    like = _read(last)
    rows = filled.copy()
    if time_column and time_column not in rows.columns and LOGGED_AT in rows.columns:
        rows[time_column] = rows[LOGGED_AT]  # when it was served
    missing = [c for c in like.columns if c not in rows.columns]
    if missing:
        return None, f"not added to training: the batches hold {missing}, which the prediction log does not"
    rows = conform(rows[list(like.columns)], like)
    if held.exists():
        rows = pd.concat([pd.read_parquet(held), rows], ignore_index=True).drop_duplicates(id_column, keep="last")
    if len(rows) < min_rows:
        _write(rows, held)
        return None, (
            f"{len(rows)} labelled row(s) held back for training until there are {min_rows}, the contract's "
            f"smallest batch (in {held})"
        )
    path = folder / f"{BATCH_PREFIX}{stamp()}{last.suffix}"
    _write(rows, path)
    held.unlink(missing_ok=True)
    return path, f"{len(rows)} row(s) added to training as {path.name}"


def conform(rows: pd.DataFrame, like: pd.DataFrame) -> pd.DataFrame:
    """`rows` with each column of the type it has in `like` where its values allow (times as UTC);
    a column that does not convert is left as it is, for the contract to judge."""
    columns = {}
    for name in like.columns:
        want, values = like[name].dtype, rows[name]
        try:
            if isinstance(want, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(want):
                values = pd.to_datetime(values, utc=True, format="ISO8601")
                tz = want.tz if isinstance(want, pd.DatetimeTZDtype) else None
                values = values.dt.tz_convert(tz) if tz is not None else values.dt.tz_localize(None)
            columns[name] = values.astype(want)
        except (TypeError, ValueError):
            columns[name] = values
    return pd.DataFrame(columns, index=rows.index)


def min_batch_rows(suite: dict) -> int:
    """The fewest rows a batch may have under this GX suite (1 when it sets no minimum)."""
    for item in suite.get("expectations", []):
        if item.get("type") == "expect_table_row_count_to_be_between":
            return max(1, int(item.get("kwargs", {}).get("min_value") or 1))
    return 1


def _labels(values: pd.Series) -> pd.Series:
    """Labels as typed values: text that is all whole numbers becomes integers, other numbers floats."""
    if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
        numbers = pd.to_numeric(values.astype("string").str.strip(), errors="coerce")
        if numbers.notna().all():
            values = numbers
    if pd.api.types.is_float_dtype(values.dtype) and np.all(np.mod(values.to_numpy(dtype="float64"), 1) == 0):
        return values.astype("int64")
    return values


def id_text(values: pd.Series) -> pd.Series:
    def text(value: object) -> str:
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)

    return values.map(text)


def _read(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise MonitoringError(f"cannot read {path}: {exc}") from exc


def _write(frame: pd.DataFrame, path: Path) -> None:
    with staged(path) as staging:
        if path.suffix == ".parquet":
            frame.to_parquet(staging, index=False)
        else:
            frame.to_csv(staging, index=False)


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    with staged(path) as staging:
        frame.to_csv(staging, index=False)
