"""The BentoML service through its ASGI app, loading the champion from a real registry."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from starlette.testclient import TestClient


@pytest.fixture(scope="module")
def client(trained, tmp_path_factory: pytest.TempPathFactory):
    config_path, config, result = trained
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLOPS_CONFIG", str(config_path))
        patch.delenv("MLOPS_MODEL_NAME", raising=False)
        from serving.service import PredictionService

        with TestClient(PredictionService.to_asgi()) as test_client:
            yield test_client, config, result


@pytest.fixture(scope="module")
def rows(trained) -> list[dict]:
    _, config, _ = trained
    source = sorted(Path(config.data.source).glob("*.parquet"))[0]
    frame = pd.read_parquet(source).head(5).drop(columns=["default", "application_time"])
    return json.loads(frame.to_json(orient="records"))


def test_health(client) -> None:
    test_client, _, _ = client
    assert test_client.get("/healthz").status_code == 200


def test_predict_answers_predictions_probabilities_and_version(client, rows) -> None:
    test_client, _, result = client
    response = test_client.post("/predict", json={"rows": rows})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"predictions", "probabilities", "model_version"}
    assert len(body["predictions"]) == len(rows) == len(body["probabilities"])
    assert set(body["predictions"]) <= {0, 1}
    assert all(0.0 <= p <= 1.0 for p in body["probabilities"])
    assert body["model_version"] == result.model_version


def test_online_and_batch_predictions_agree(client, rows) -> None:
    from components import registry
    from components.scoring import predict_records

    test_client, _, _ = client
    online = test_client.post("/predict", json={"rows": rows}).json()
    offline = predict_records(registry.load_model("models:/loans@champion"), rows)
    assert online["predictions"] == offline.labels
    assert online["probabilities"] == pytest.approx(offline.probabilities)


def _without(rows: list[dict], column: str) -> list[dict]:
    return [{k: v for k, v in row.items() if k != column} for row in rows]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ("{not json", 400, "json"),
        ({}, 400, "rows"),
        ({"rows": "nope"}, 400, "list"),
        ({"rows": [1, 2]}, 400, "dict"),
        ({"rows": []}, 400, "no rows"),
        ("missing column", 400, "missing column(s): region"),
        ("text in a number", 400, "credit_score must be a number"),
        ("nested value", 400, "purpose must be a single value"),
    ],
)
def test_bad_requests_get_a_4xx_naming_the_problem(client, rows, body, status, fragment) -> None:
    test_client, _, _ = client
    if body == "missing column":
        body = {"rows": _without(rows, "region")}
    elif body == "text in a number":
        body = {"rows": [{**rows[0], "credit_score": "excellent"}]}
    elif body == "nested value":
        body = {"rows": [{**rows[0], "purpose": ["car"]}]}
    if isinstance(body, str):
        response = test_client.post("/predict", content=body, headers={"content-type": "application/json"})
    else:
        response = test_client.post("/predict", json=body)
    assert response.status_code == status, response.text
    assert fragment.lower() in response.text.lower()


def test_too_many_rows_is_413(client, rows) -> None:
    test_client, config, _ = client
    limit = config.serving.max_rows_per_request
    response = test_client.post("/predict", json={"rows": rows[:1] * (limit + 1)})
    assert response.status_code == 413
    assert str(limit) in response.json()["error"]
