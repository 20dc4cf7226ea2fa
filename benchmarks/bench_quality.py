"""Model quality on tables the project has never seen: the README's commands against a plain baseline.

For each real public table shipped inside a PyPI package (`benchmarks/tables.py`), split once into
train and holdout (seeded, stratified for classes), this runs what a user runs from the repository
root with the default config:

    mlops run --data train.csv --target T --name N --json
    mlops score --name N --input holdout.csv --output scores.parquet --on-invalid reject --json

and scores the holdout beside a plain scikit-learn baseline fitted on the same training rows: one-hot
encoding of the text columns and HistGradientBoosting with default settings. Metrics: ROC AUC
(binary), accuracy (multiclass), R² (regression), on the holdout rows both sides scored. Goal: never
more than 0.02 below the baseline, and ahead of it on average.

Each table gets its own workspace and contract folder under a temporary directory (MLOPS_HOME and
MLOPS__VALIDATION__SUITE_DIR), so the repository's expectations/ and .mlops/ are left alone; the
workspace's local Prefect server is stopped at the end.

    .venv/bin/python benchmarks/bench_quality.py [--tables a,b] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tables  # the sibling module, found from any working directory

ROOT = Path(__file__).resolve().parent.parent
MLOPS = ROOT / ".venv" / "bin" / "mlops"
GOAL_GAP = -0.02
METRIC = {"binary": "roc_auc", "multiclass": "accuracy", "regression": "r2"}


@dataclass(frozen=True)
class Outcome:
    table: str
    task: str
    train_rows: int
    holdout_rows: int
    metric: str
    ours: float | None
    baseline: float
    scored_rows: int
    seconds: float
    family: str | None
    detail: str = ""
    coverage: float | None = None  # regression: the holdout's share inside the served intervals

    @property
    def gap(self) -> float | None:
        return None if self.ours is None else self.ours - self.baseline


def _environment(folder: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MLOPS", "MLFLOW_TRACKING"))}
    env.update(
        {
            "MLOPS_HOME": str(folder / "ws"),
            "MLOPS__VALIDATION__SUITE_DIR": str(folder / "expectations"),
            "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "BENTOML_DO_NOT_TRACK": "true",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "GX_ANALYTICS_ENABLED": "false",
        }
    )
    return env


def _mlops(args: list[str], env: dict[str, str], log: Path) -> dict[str, object] | None:
    """Run an `mlops` command from the repository root; its last stdout line is its JSON outcome."""
    with log.open("a") as handle:
        handle.write(f"\n$ mlops {' '.join(args)}\n")
        done = subprocess.run([str(MLOPS), *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        handle.write(done.stdout + done.stderr)
    lines = [line for line in done.stdout.strip().splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def _baseline(train: pd.DataFrame, target: str, task: str) -> Pipeline:
    """One-hot for text, numbers as they are, HistGradientBoosting with default settings."""
    X = train.drop(columns=[target])
    text = [c for c in X.columns if _is_text(X[c])]
    encode = ColumnTransformer(
        [("text", OneHotEncoder(handle_unknown="ignore"), text)], remainder="passthrough", sparse_threshold=0
    )
    # Default settings; a fixed seed only makes its early-stopping split (above 10,000 rows) repeatable.
    model = (HistGradientBoostingRegressor if task == "regression" else HistGradientBoostingClassifier)(random_state=0)
    return Pipeline([("encode", encode), ("model", model)]).fit(_as_text(X, text), train[target])


def _as_text(X: pd.DataFrame, text: list[str]) -> pd.DataFrame:
    return X.assign(**{c: X[c].astype(object).where(X[c].notna(), "missing").astype(str) for c in text})


def _score(task: str, y: pd.Series, predicted: pd.Series, probability: pd.Series | None) -> float:
    if task == "binary":
        assert probability is not None
        return float(skm.roc_auc_score(y, probability))
    if task == "multiclass":
        return float(skm.accuracy_score(y.astype(str), predicted.astype(str)))
    return float(skm.r2_score(y, predicted))


def _train_and_score(
    target: str, name: str, train_file: Path, holdout_file: Path, scores: Path, env: dict[str, str], log: Path
) -> tuple[dict[str, object] | None, dict[str, object] | None]:
    """`mlops run` on the training rows, then `mlops score` of the holdout when a version was registered:
    each command's JSON outcome (None when it printed none)."""
    trained = _mlops(["run", "--data", str(train_file), "--target", target, "--name", name, "--json"], env, log)
    scored = None
    if trained and trained.get("model_version"):
        scored = _mlops(
            [
                "score",
                "--name",
                name,
                "--input",
                str(holdout_file),
                "--output",
                str(scores),
                "--on-invalid",
                "reject",
                "--json",
            ],
            env,
            log,
        )
    return trained, scored


def run_table(table: tables.Table, folder: Path, seed: int) -> Outcome:
    frame = tables.load(table)
    name = f"bench_{table.name}"
    stratify = frame[table.target] if table.task != "regression" else None
    train, holdout = train_test_split(frame, test_size=0.2, random_state=seed, stratify=stratify)
    folder.mkdir(parents=True, exist_ok=True)
    train_file, holdout_file, scores = folder / "train.csv", folder / "holdout.csv", folder / "scores.parquet"
    train.to_csv(train_file, index=False)
    holdout.drop(columns=[table.target]).to_csv(holdout_file, index=False)
    env, log = _environment(folder), folder / "commands.log"
    started = time.perf_counter()
    trained, scored = _train_and_score(table.target, name, train_file, holdout_file, scores, env, log)
    seconds = time.perf_counter() - started
    model = _baseline(train, table.target, table.task)
    features = holdout.drop(columns=[table.target])
    features = _as_text(features, [c for c in features.columns if _is_text(features[c])])
    y = holdout[table.target].reset_index(drop=True)
    base_predicted = pd.Series(model.predict(features))
    base_probability = pd.Series(model.predict_proba(features)[:, 1]) if table.task == "binary" else None
    metric, family = METRIC[table.task], _family(folder, trained)
    if scored is None or not scores.is_file():
        reason = str((trained or {}).get("reason") or "the run failed (see commands.log)")
        baseline = _score(table.task, y, base_predicted, base_probability)
        return Outcome(
            table.name, table.task, len(train), len(holdout), metric, None, baseline, 0, seconds, family, reason
        )
    ours = pd.read_parquet(scores).set_index("input_row").sort_index().reset_index()
    rows = ours["input_row"].to_numpy()

    def on_rows(values: pd.Series | None) -> pd.Series | None:
        return None if values is None else values.iloc[rows].reset_index(drop=True)

    truth = y.iloc[rows].reset_index(drop=True)
    baseline = _score(table.task, truth, base_predicted.iloc[rows].reset_index(drop=True), on_rows(base_probability))
    mine = _score(table.task, truth, ours["prediction"], ours.get("probability"))
    rejected = len(holdout) - len(rows)
    detail = f"{rejected} holdout row(s) rejected by the contract" if rejected else ""
    coverage = None
    if {"lower", "upper"} <= set(ours.columns):
        values = truth.to_numpy(dtype="float64")
        coverage = float(((ours["lower"] <= values) & (values <= ours["upper"])).mean())
    return Outcome(
        table.name,
        table.task,
        len(train),
        len(holdout),
        metric,
        mine,
        baseline,
        len(rows),
        seconds,
        family,
        detail,
        coverage,
    )


def _is_text(values: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)


def _family(folder: Path, trained: dict[str, object] | None) -> str | None:
    """The model family the run chose (a tag of its MLflow run)."""
    if not trained or not trained.get("run_id"):
        return None
    import sqlite3

    database = folder / "ws" / "mlflow" / "mlflow.db"
    with sqlite3.connect(database) as connection:
        row = connection.execute(
            "select value from tags where run_uuid = ? and key = 'model.family'", (trained["run_id"],)
        ).fetchone()
    return str(row[0]) if row else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", help="comma-separated table names (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="keep every table's workspace, data and logs in this folder")
    options = parser.parse_args()
    chosen = [tables.find(n.strip()) for n in options.tables.split(",")] if options.tables else list(tables.TABLES)
    base = options.keep or Path(tempfile.mkdtemp(prefix="bench-quality-"))
    outcomes = []
    try:
        for table in chosen:
            folder = base / table.name
            print(f"{table.name}: {table.note}", flush=True)
            try:
                outcomes.append(run_table(table, folder, options.seed))
            finally:
                stop = [str(MLOPS), "server", "stop"]
                subprocess.run(stop, cwd=ROOT, env=_environment(folder), capture_output=True, check=False)
            print(f"  -> {_line(outcomes[-1])}", flush=True)
    finally:
        if options.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    _report(outcomes)
    gaps = [o.gap for o in outcomes]
    finished = [g for g in gaps if g is not None]
    met = len(finished) == len(gaps) > 0 and min(finished) >= GOAL_GAP and float(np.mean(finished)) > 0
    return 0 if met else 1


def _coverage(o: Outcome) -> str:
    return "" if o.coverage is None else f"{o.coverage:.1%}"


def _line(o: Outcome) -> str:
    ours = "failed" if o.ours is None else f"{o.ours:.4f}"
    gap = "" if o.gap is None else f"{o.gap:+.4f}"
    covered = f", interval coverage {_coverage(o)}" if o.coverage is not None else ""
    timing = f"{o.family or '-'}, {o.seconds:.0f} s{covered}"
    return f"{o.metric} ours {ours} baseline {o.baseline:.4f} {gap} ({timing}) {o.detail}"


def _report(outcomes: list[Outcome]) -> None:
    header = (
        f"{'table':<16} {'task':<10} {'train':>6} {'holdout':>7} {'metric':<8} {'ours':>7} {'baseline':>8} "
        f"{'gap':>7} {'wall s':>6} {'90% PI':>6}  family"
    )
    print("\n" + header)
    print("-" * len(header))
    for o in outcomes:
        ours = "failed" if o.ours is None else f"{o.ours:.4f}"
        gap = "" if o.gap is None else f"{o.gap:+.4f}"
        print(
            f"{o.table:<16} {o.task:<10} {o.train_rows:>6} {o.holdout_rows:>7} {o.metric:<8} {ours:>7} "
            f"{o.baseline:>8.4f} {gap:>7} {o.seconds:>6.0f} {_coverage(o):>6}  {o.family or '-'}"
            f"{'; ' + o.detail if o.detail else ''}"
        )
    covered = [(o.table, o.coverage, o.scored_rows) for o in outcomes if o.coverage is not None]
    if covered:
        within = [t for t, c, _ in covered if abs(c - 0.9) <= 0.03]
        print(
            "\nregression intervals (nominal 90%), held-out coverage: "
            + ", ".join(f"{t} {c:.1%} of {n} rows" for t, c, n in covered)
            + f"; within 3 points of nominal: {len(within)} of {len(covered)}"
        )
    gaps = [o.gap for o in outcomes if o.gap is not None]
    if gaps:
        worst = min(gaps)
        print(
            f"\nworst gap {worst:+.4f} (goal >= {GOAL_GAP:+.2f}: {'met' if worst >= GOAL_GAP else 'NOT met'}); "
            f"mean gap {np.mean(gaps):+.4f} (goal > 0: {'met' if np.mean(gaps) > 0 else 'NOT met'}); "
            f"{len(outcomes) - len(gaps)} table(s) failed"
        )


if __name__ == "__main__":
    raise SystemExit(main())
