"""The serving benchmark's cases: each task's generated training table and project, the champion trained
by `mlops run`, and the real rows both servers are sent."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from project import write_project
from serving_servers import BenchError, say, tail

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _write_data(folder: Path, task: str) -> dict[str, Any]:
    """The case's training table (generated, 20,000 rows) and its model's data settings."""
    import pandas as pd

    from components.simulation.simulate import TRIP_ID, TRIP_TARGET, TRIP_TIME, generate_batches, generate_trips

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{task}.csv"
    if task == "regression":
        generate_trips(20_000, seed=7).frame.to_csv(path, index=False)
        return {"source": str(path), "target": TRIP_TARGET, "id_column": TRIP_ID, "time_column": TRIP_TIME}
    frame = pd.concat([b.frame for b in generate_batches(4, 5_000, seed=7)], ignore_index=True)
    if task == "multiclass":  # the rate band a loan gets, from the applicant's other columns
        frame["rate_band"] = pd.qcut(frame.pop("interest_rate"), 3, labels=["low", "mid", "high"]).astype(str)
        frame = frame.drop(columns=["default"])
    frame.to_csv(path, index=False)
    target = "rate_band" if task == "multiclass" else "default"
    return {"source": str(path), "target": target, "id_column": "loan_id", "time_column": "application_time"}


def _write_config(folder: Path, work: Path, task: str, estimator: str) -> Path:
    project = {
        "home": str(work / "ws"),
        "seed": 7,
        "validation": {"suite_dir": str(work / "expectations")},
        "search": {"trials": 3},
        "evaluation": {"plots": False},
        "label_review": {"enabled": False},
        "prefect": {"server": "ephemeral"},  # nothing left running after the setup
    }
    model = {"data": _write_data(work / "data", task), "model": {"estimator": estimator}}
    return write_project(folder, project, model_name(task, estimator), model)


def model_name(task: str, estimator: str) -> str:
    return f"{task}_{estimator}"


def _run_step(cmd: list[str], env: dict[str, str], log: Path) -> None:
    say(" ".join(cmd[1:] if cmd[0].endswith("mlops") else cmd))
    with log.open("ab") as out:
        result = subprocess.run(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} exited {result.returncode}:\n{tail(log)}")


def setup_case(work: Path, task: str, estimator: str, env: dict[str, str]) -> Path:
    config = _write_config(work, work, task, estimator)
    log = work / "setup.log"
    started = time.perf_counter()
    _run_step([str(BIN / "mlops"), "run", "--config", str(config), "--name", model_name(task, estimator)], env, log)
    say(f"trained and registered in {time.perf_counter() - started:.0f} s (log: {log})")
    return config


def request_rows(config: Any, home: Path, pool: int, seed: int) -> list[dict[str, Any]]:
    """Real rows of the training source as a client sends them: target and time columns removed."""
    from components.core.config import resolve_source
    from components.data.extract import extract_table

    frame = extract_table(resolve_source(config, home), config.data.query)
    drop = [c for c in (config.data.target, config.data.time_column) if c and c in frame.columns]
    frame = frame.drop(columns=drop)
    frame = frame.sample(n=min(pool, len(frame)), random_state=seed)
    return json.loads(frame.to_json(orient="records"))


def signature_columns(model_uri: str) -> list[str] | None:
    """The input columns of the logged model's signature (MLflow warns per request about others)."""
    try:
        from mlflow.models import get_model_info

        signature = get_model_info(model_uri).signature
        return list(signature.inputs.input_names()) if signature is not None else None
    except Exception:  # noqa: BLE001 - then MLflow gets the rows as they are
        return None


def write_bodies(path: Path, bodies: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(b, separators=(",", ":")) + "\n" for b in bodies))
    return path
