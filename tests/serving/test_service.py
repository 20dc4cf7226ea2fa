"""The BentoML service through its ASGI app, loading the champion from a real registry."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
from starlette.testclient import TestClient

MAX_ROWS = 50


def _wait_ready(client: TestClient, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, client.get("/metadata").text
        time.sleep(0.1)


def _service(config_path: Path, patch: pytest.MonkeyPatch, **env: str):
    patch.setenv("MLOPS_CONFIG", str(config_path))
    patch.delenv("MLOPS_MODEL_NAME", raising=False)
    patch.setenv("MLOPS__SERVING__MAX_ROWS_PER_REQUEST", str(MAX_ROWS))
    patch.setenv("MLOPS__SERVING__MAX_BODY_MB", "0.5")
    patch.setenv("MLOPS__SERVING__RELOAD_SECONDS", "0.5")
    patch.setenv("MLOPS__SERVING__PREDICTION_LOG__FLUSH_SECONDS", "0.2")
    for name, value in env.items():
        patch.setenv(name, value)
    from serving.service import create_service, settings_from_environment

    return create_service(settings_from_environment())


@pytest.fixture(scope="module")
def client(trained):
    config_path, config, result = trained
    with pytest.MonkeyPatch.context() as patch:
        service = _service(config_path, patch)
        with TestClient(service.to_asgi()) as test_client:
            _wait_ready(test_client)
            yield test_client, config, result


@pytest.fixture(scope="module")
def rows(trained) -> list[dict]:
    _, config, _ = trained
    source = sorted(Path(config.data.source).glob("*.parquet"))[0]
    frame = pd.read_parquet(source).head(5).drop(columns=["default", "application_time"])
    return json.loads(frame.to_json(orient="records"))


def test_health_and_readiness(client) -> None:
    test_client, _, _ = client
    assert test_client.get("/healthz").status_code == 200
    assert test_client.get("/readyz").status_code == 200


def test_predict_answers_predictions_probabilities_version_and_request_id(client, rows) -> None:
    test_client, _, result = client
    response = test_client.post("/predict", json={"rows": rows}, headers={"X-Request-ID": "order-42"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"request_id", "model_name", "model_version", "predictions", "probabilities"}
    assert body["request_id"] == "order-42" == response.headers["x-request-id"]
    assert len(body["predictions"]) == len(rows) == len(body["probabilities"])
    assert set(body["predictions"]) <= {0, 1}
    assert all(0.0 <= p <= 1.0 for p in body["probabilities"])
    assert body["model_name"] == "loans" and body["model_version"] == result.model_version
    fresh = test_client.post("/predict", json={"rows": rows[:1]})
    assert len(fresh.json()["request_id"]) == 32 and fresh.json()["request_id"] == fresh.headers["x-request-id"]


def test_predict_answers_as_bentomls_api_behind_it_would(client, rows) -> None:
    """POST /predict is answered by `PredictRoute` in front of BentoML's API layer; the API (what
    /docs.json describes) answers the same when the route stands aside (it has no runtime yet).
    That BentoML's request metrics still count it is checked on a real server."""
    from serving.fastpath import PredictRoute, RouteState

    test_client, _, _ = client
    response = test_client.post("/predict", json={"rows": rows[:2]}, headers={"X-Request-ID": "m-1"})
    assert response.status_code == 200 and response.headers["server"].startswith("BentoML Service/")
    layer = test_client.app.middleware_stack  # built by the requests before
    while layer is not None and not isinstance(layer, PredictRoute):
        layer = getattr(layer, "app", None)
    assert layer is not None, "PredictRoute is not in the middleware stack"
    state: RouteState = layer.state
    runtime, state.runtime = state.runtime, None
    try:
        through_api = test_client.post("/predict", json={"rows": rows[:2]}, headers={"X-Request-ID": "m-1"})
        refused = test_client.post("/predict", json={"rows": [{"age": "x"}]})
    finally:
        state.runtime = runtime
    assert through_api.status_code == 200 and through_api.json() == response.json()
    fast_refused = test_client.post("/predict", json={"rows": [{"age": "x"}]})
    assert refused.status_code == fast_refused.status_code == 400
    assert [e["loc"] for e in refused.json()["detail"]] == [e["loc"] for e in fast_refused.json()["detail"]]


def test_online_and_batch_predictions_agree(client, rows) -> None:
    from components.inference.scoring import predict_records
    from components.tracking import registry

    test_client, _, _ = client
    online = test_client.post("/predict", json={"rows": rows}).json()
    offline = predict_records(registry.load_model("models:/loans@champion"), rows)  # the scikit-learn pipeline
    assert online["predictions"] == offline.labels
    assert online["probabilities"] == pytest.approx(offline.probabilities, rel=0, abs=1e-6)
    for row, label, probability in zip(rows, offline.labels, offline.probabilities, strict=True):  # one by one
        one = test_client.post("/predict", json={"rows": [row]}).json()
        assert one["predictions"] == [label] and one["probabilities"] == pytest.approx([probability], rel=0, abs=1e-6)


def _without(rows: list[dict], column: str) -> list[dict]:
    return [{k: v for k, v in row.items() if k != column} for row in rows]


@pytest.mark.parametrize(
    ("case", "field"),
    [
        ("not json", None),
        ("no rows key", "rows"),
        ("rows not a list", "rows"),
        ("row not an object", "rows"),
        ("missing column", "region"),
        ("unknown column", "colour"),
        ("text in a number", "credit_score"),
        ("bool in a number", "age"),
        ("number in a text column", "purpose"),
        ("nested value", "purpose"),
        ("null in a required column", "loan_amount"),
    ],
)
def test_bad_requests_get_a_400_naming_the_field(client, rows, case, field) -> None:
    test_client, _, _ = client
    bodies = {
        "no rows key": {},
        "rows not a list": {"rows": "nope"},
        "row not an object": {"rows": [1, 2]},
        "missing column": {"rows": _without(rows, "region")},
        "unknown column": {"rows": [{**rows[0], "colour": "red"}]},
        "text in a number": {"rows": [{**rows[0], "credit_score": "excellent"}]},
        "bool in a number": {"rows": [{**rows[0], "age": True}]},
        "number in a text column": {"rows": [{**rows[0], "purpose": 3}]},
        "nested value": {"rows": [{**rows[0], "purpose": ["car"]}]},
        "null in a required column": {"rows": [{**rows[0], "loan_amount": None}]},
    }
    if case == "not json":
        response = test_client.post("/predict", content="{not json", headers={"content-type": "application/json"})
    else:
        response = test_client.post("/predict", json=bodies[case])
    assert response.status_code == 400, response.text
    if field is not None:
        assert field in {str(part) for error in response.json()["detail"] for part in error["loc"]}, response.text


def test_null_in_an_optional_column_is_scored(client, rows) -> None:
    test_client, _, _ = client
    response = test_client.post("/predict", json={"rows": [{**rows[0], "annual_income": None}]})
    assert response.status_code == 200, response.text


def test_empty_and_too_many_rows(client, rows) -> None:
    test_client, _, _ = client
    assert test_client.post("/predict", json={"rows": []}).status_code == 400
    response = test_client.post("/predict", json={"rows": rows[:1] * (MAX_ROWS + 1)})
    assert response.status_code == 413
    assert str(MAX_ROWS) in response.json()["error"]


def test_oversized_body_is_413_before_parsing(client) -> None:
    test_client, _, _ = client
    response = test_client.post("/predict", content=b"x" * (1 << 20), headers={"content-type": "application/json"})
    assert response.status_code == 413 and "bytes" in response.json()["error"]


def test_metadata_names_the_model_and_its_signature(client) -> None:
    test_client, config, result = client
    meta = test_client.get("/metadata").json()
    assert meta["ready"] and meta["model_name"] == "loans" and meta["model_version"] == result.model_version
    assert meta["run_id"] == result.run_id
    assert meta["training_data_fingerprint"]
    inputs = {c["name"]: c for c in meta["signature"]["inputs"]}
    assert inputs["credit_score"]["type"] == "double" and inputs["region"]["type"] == "string"
    assert config.data.target not in inputs
    inference = meta["inference"]  # proven equivalent to the pipeline at load, on the logged rows and edge cases
    assert inference["path"] == "compiled" and inference["fallback_reason"] is None, inference
    assert inference["checked_rows"] >= 100 and inference["max_difference"] <= inference["tolerance"] == 1e-6


def test_openapi_shows_the_real_columns(client) -> None:
    test_client, _, _ = client
    spec = test_client.get("/docs.json").json()
    assert {"/predict", "/metadata", "/healthz", "/readyz"} <= set(spec["paths"])
    row = spec["components"]["schemas"]["LoansRow"]
    assert {"credit_score", "region", "loan_id"} <= set(row["properties"])
    assert "loan_id" not in row["required"] and "credit_score" in row["required"]


def test_concurrent_requests_are_batched_and_all_answered(client, rows) -> None:
    test_client, _, _ = client
    before = test_client.get("/metadata").json()["batching"]

    def call(i: int) -> int:
        return test_client.post("/predict", json={"rows": rows[i % len(rows) :][:2]}).status_code

    with ThreadPoolExecutor(32) as pool:
        statuses = list(pool.map(call, range(256)))
    assert statuses == [200] * 256
    after = test_client.get("/metadata").json()["batching"]
    assert after["batches"] - before["batches"] < 256  # some requests shared a predict call
    assert after["rejected"] == before["rejected"]


def test_every_answer_is_in_the_prediction_log(client, rows) -> None:
    from components.inference.predlog import PREDICTION, PROBABILITY, REQUEST_ID, read_prediction_log

    test_client, config, _ = client
    directory = Path(config.home) / "predictions" / "loans"
    answer = test_client.post("/predict", json={"rows": rows}, headers={"X-Request-ID": "logged-1"}).json()
    deadline = time.monotonic() + 30
    while True:
        log = read_prediction_log(directory)
        mine = log[log[REQUEST_ID] == "logged-1"]
        if len(mine) == len(rows) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(mine) == len(rows)
    assert mine["loan_id"].tolist() == [r["loan_id"] for r in rows]
    assert mine[PROBABILITY].tolist() == pytest.approx(answer["probabilities"])
    assert mine[PREDICTION].tolist() == [str(p) for p in answer["predictions"]]
    assert mine["credit_score"].notna().any()


def test_odd_ids_are_logged_like_any_other(client, rows) -> None:
    """A string id or one beyond 64 bits among ordinary requests: every row reaches the log."""
    from components.inference.predlog import REQUEST_ID, read_prediction_log
    from components.monitoring.monitor import join_labels

    test_client, config, _ = client
    directory = Path(config.home) / "predictions" / "loans"
    odd = [{**rows[0], "loan_id": "abc"}, {**rows[0], "loan_id": 10**30 + 7}]
    sent = [({**rows[i % len(rows)], "loan_id": 900_000 + i}, f"odd-ids-{i}") for i in range(20)]
    sent += [(row, f"odd-ids-{20 + i}") for i, row in enumerate(odd)]
    for row, request_id in sent:
        response = test_client.post("/predict", json={"rows": [row]}, headers={"X-Request-ID": request_id})
        assert response.status_code == 200, response.text
    deadline = time.monotonic() + 30
    while True:
        log = read_prediction_log(directory)
        mine = log[log[REQUEST_ID].astype(str).str.startswith("odd-ids-")]
        if len(mine) == len(sent) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(mine) == len(sent)
    assert {"abc", str(10**30 + 7)} <= {str(v) for v in mine["loan_id"]}
    assert test_client.get("/metadata").json()["prediction_log"]["dropped_rows"] == 0
    labels = pd.DataFrame({"loan_id": [900_003, 10**30 + 7], "default": [1, 0]})
    joined = join_labels(mine, labels.astype({"loan_id": object}), "loan_id", "default")
    assert joined.notna().sum() == 2


def test_repeated_or_malformed_headers_are_not_trusted(client, rows) -> None:
    test_client, _, _ = client
    body = json.dumps({"rows": rows[:1]})
    twice = test_client.post(
        "/predict",
        content=body,
        headers=[("content-type", "application/json"), ("content-type", "text/plain")],
    )
    assert twice.status_code == 400 and "content-type" in twice.json()["error"]
    ids = test_client.post(
        "/predict",
        content=body,
        headers=[("content-type", "application/json"), ("x-request-id", "a"), ("x-request-id", "b")],
    )
    assert ids.status_code == 200 and ids.headers["x-request-id"] not in ("a", "b")
    newline = test_client.post("/predict", json={"rows": rows[:1]}, headers={"X-Request-ID": "line\n"})
    assert newline.headers["x-request-id"] != "line\n" and "\n" not in newline.json()["request_id"]


def test_the_service_follows_the_champion_alias_without_failing_a_request(client, rows) -> None:
    from tests.serving.switching import promote_under_traffic

    test_client, config, result = client
    switch = promote_under_traffic(
        Path(config.home),
        "loans",
        predict=lambda: test_client.post("/predict", json={"rows": rows[:2]}),
        served_version=lambda: test_client.get("/metadata").json()["model_version"],
    )
    assert switch.statuses and set(switch.statuses) == {200}
    assert switch.versions == {result.model_version, switch.new_version}


def test_a_pickled_champion_is_refused_and_the_service_keeps_answering(client, rows, tmp_path: Path) -> None:
    """Someone with registry access points `champion` at a version whose artifact is a pickle that
    plants a file when loaded: the service never loads it and goes on answering with its model."""
    import pickle

    import mlflow
    import yaml

    from components.core.workspace import Workspace
    from components.tracking import registry
    from tests.unit.test_safe_loading import Planted

    test_client, config, _ = client
    ml = registry.connect(Workspace.at(config.home))
    champion = registry.get_champion(ml, "loans")
    assert champion is not None
    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=champion.source, dst_path=str(tmp_path / "m")))
    meta = yaml.safe_load((folder / "MLmodel").read_text())
    flavor = meta["flavors"]["sklearn"]
    marker = tmp_path / "ran"
    (folder / flavor["pickled_model"]).write_bytes(pickle.dumps(Planted(marker)))
    flavor["serialization_format"] = "pickle"
    (folder / "MLmodel").write_text(yaml.safe_dump(meta))
    with mlflow.start_run(experiment_id=ml.get_run(champion.run_id).info.experiment_id) as run:
        mlflow.log_artifacts(str(folder), "model")
    hostile = registry.register_model(f"runs:/{run.info.run_id}/model", "loans")
    ml.set_registered_model_alias("loans", "champion", hostile)
    try:
        deadline = time.monotonic() + 30
        while "pickle" not in str(test_client.get("/metadata").json()["reload"]["last_error"]):
            assert time.monotonic() < deadline, test_client.get("/metadata").json()
            time.sleep(0.2)
        answer = test_client.post("/predict", json={"rows": rows[:1]})
        assert answer.status_code == 200 and answer.json()["model_version"] == champion.version
        assert not marker.exists()
        from components.inference.scoring import load_serving_model

        with pytest.raises(registry.UnsafeModel):  # batch scoring and monitoring load the same way
            load_serving_model("models:/loans@champion")
        assert not marker.exists()
    finally:
        ml.set_registered_model_alias("loans", "champion", champion.version)


def test_api_key_guards_predict_and_metadata_but_not_health(trained, rows) -> None:
    config_path, _, _ = trained
    with pytest.MonkeyPatch.context() as patch:
        service = _service(
            config_path,
            patch,
            MLOPS_API_KEY="s3cret",
            MLOPS__SERVING__PREDICTION_LOG__ENABLED="false",
            # One process holds one Prometheus registry: the module's other service already registered.
            MLOPS__SERVING__METRICS="false",
        )
        with TestClient(service.to_asgi()) as test_client:
            _wait_ready(test_client)
            assert test_client.get("/healthz").status_code == 200
            assert test_client.post("/predict", json={"rows": rows}).status_code == 401
            wrong = test_client.post("/predict", json={"rows": rows}, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
            assert test_client.get("/metadata").status_code == 401
            auth = {"Authorization": "Bearer s3cret"}
            assert test_client.post("/predict", json={"rows": rows}, headers=auth).status_code == 200
            assert test_client.get("/metadata", headers=auth).status_code == 200
