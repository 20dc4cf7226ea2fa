"""The in-process side of the serving benchmark: the served model's own predict call (the compiled path when
it passed its load check) against the scikit-learn pipeline's call on the same row, timed and profiled."""

from __future__ import annotations

import statistics
import time
from typing import Any


def _summary_ms(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)

    def q(p: float) -> float:
        return ms[max(0, min(len(ms) - 1, round(p / 100 * (len(ms) - 1))))]

    mean = statistics.fmean(ms)
    return {"count": len(ms), "p50_ms": q(50), "p90_ms": q(90), "p99_ms": q(99), "max_ms": ms[-1], "mean_ms": mean}


def in_process(model_uri: str, rows: list[dict[str, Any]], calls: int, profile: bool) -> dict[str, Any]:
    """The service's per-request call, timed in this process with one thread (as `mlops serve` runs)."""
    import pandas as pd
    from threadpoolctl import threadpool_limits

    from components.inference.scoring import load_serving_model

    served = load_serving_model(model_uri)
    timings: list[float] = []
    with threadpool_limits(limits=1):
        for row in rows[:50]:
            served.predict([row])  # first calls: lazy initialisation is not what a request pays
        machine, own, wall = _machine_busy(), time.process_time(), time.perf_counter()
        for i in range(calls):
            row = rows[i % len(rows)]
            started = time.perf_counter()
            served.predict([row])
            timings.append(time.perf_counter() - started)
        wall = time.perf_counter() - wall
        own = time.process_time() - own
        result: dict[str, Any] = _summary_ms(timings)
        result["rps"] = 1000 / result["mean_ms"]
        after = _machine_busy()
        result["other_cpu_share"] = (
            (after - machine - own) / wall if machine is not None and after is not None else None
        )
        result["breakdown"] = _breakdown(served, rows, pd)
        result["estimator"] = _estimator_name(served)
        result["inference"] = served.inference.describe() if served.inference is not None else None
        result["pipeline"] = _pipeline_call(served, rows, calls, pd)
        if profile:
            result["profile"] = _profile(served, rows)
    return result


def _pipeline_call(served: Any, rows: list[dict[str, Any]], calls: int, pd: Any) -> dict[str, float]:
    """The scikit-learn pipeline's own call on each row's one-row DataFrame (built beforehand, not timed)."""
    model = served.model
    method = model.predict_proba if hasattr(model, "classes_") else model.predict
    frames = [pd.DataFrame.from_records([row]) for row in rows[:200]]
    for frame in frames[:20]:
        method(frame)
    timings = []
    for i in range(calls):
        frame = frames[i % len(frames)]
        started = time.perf_counter()
        method(frame)
        timings.append(time.perf_counter() - started)
    return _summary_ms(timings)


def _estimator_name(served: Any) -> str:
    try:
        from components.inference.scoring import pipeline_of

        return type(pipeline_of(getattr(served, "model", served)).steps[-1][1]).__name__
    except Exception:  # noqa: BLE001 - a label only
        return "?"


def _machine_busy() -> float | None:
    """CPU seconds the machine spent busy so far, all cores (psutil; None without it)."""
    try:
        import psutil
    except ImportError:
        return None
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def _median_ms(fn: Any, rows: list[dict[str, Any]], calls: int = 300) -> float:
    timings = []
    for i in range(calls):
        row = rows[i % len(rows)]
        started = time.perf_counter()
        fn(row)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1000


def _breakdown(served: Any, rows: list[dict[str, Any]], pd: Any) -> dict[str, float] | str:
    """Where a single row's time goes: the DataFrame, sklearn's preprocessing, the estimator itself."""
    try:
        from components.inference.scoring import pipeline_of

        model = getattr(served, "model", served)
        pipeline = pipeline_of(model)
        preprocess = pipeline.named_steps["preprocess"]
        estimator = pipeline.steps[-1][1]
        method = "predict_proba" if hasattr(model, "classes_") else "predict"
        frames = {i: pd.DataFrame.from_records([row]) for i, row in enumerate(rows)}
        index = {id(row): i for i, row in enumerate(rows)}
        transformed = {i: preprocess.transform(frame) for i, frame in frames.items()}
        return {
            "service_predict_ms": _median_ms(lambda r: served.predict([r]), rows),
            "dataframe_from_records_ms": _median_ms(lambda r: pd.DataFrame.from_records([r]), rows),
            f"model_{method}_ms": _median_ms(lambda r: getattr(model, method)(frames[index[id(r)]]), rows),
            "column_transformer_ms": _median_ms(lambda r: preprocess.transform(frames[index[id(r)]]), rows),
            f"estimator_{method}_ms": _median_ms(lambda r: getattr(estimator, method)(transformed[index[id(r)]]), rows),
        }
    except Exception as exc:  # noqa: BLE001 - informational only; the internals may change
        return f"not measured: {type(exc).__name__}: {exc}"


def _profile(served: Any, rows: list[dict[str, Any]], calls: int = 500, top: int = 30) -> str:
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(calls):
        served.predict([rows[i % len(rows)]])
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    return out.getvalue()


# ---------------------------------------------------------------------------------------------- servers
