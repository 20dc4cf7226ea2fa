"""Loading a model never runs foreign code: only skops files, only types on the project's list."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from components.tracking import registry


class Planted:
    """Unpickling this creates a file: what a hostile model artifact could do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _save(model, folder: Path, form: str) -> Path:
    import mlflow.sklearn

    trusted = registry.trusted_types(model) if form == "skops" else None
    mlflow.sklearn.save_model(
        model, str(folder), serialization_format=form, pip_requirements=["scikit-learn"], skops_trusted_types=trusted
    )
    return folder


@pytest.fixture
def fitted():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 3)), rng.integers(0, 2, 60)
    return make_pipeline(FunctionTransformer(np.clip, kw_args={"a_min": -2, "a_max": 2}), LogisticRegression()).fit(
        X, y
    )


def test_the_projects_own_models_load(tmp_path: Path, fitted) -> None:
    folder = _save(fitted, tmp_path / "m", "skops")
    loaded = registry.load_model(str(folder))
    assert loaded.predict(np.zeros((1, 3))).shape == (1,)


def test_a_pickled_model_is_refused_before_anything_runs(tmp_path: Path, fitted) -> None:
    folder = _save(fitted, tmp_path / "m", "pickle")
    marker = tmp_path / "ran"
    meta = yaml.safe_load((folder / "MLmodel").read_text())
    (folder / meta["flavors"]["sklearn"]["pickled_model"]).write_bytes(pickle.dumps(Planted(marker)))
    with pytest.raises(registry.UnsafeModel, match="'pickle'"):
        registry.load_model(str(folder))
    assert not marker.exists()


def test_a_model_that_lists_its_own_trusted_types_is_refused(tmp_path: Path) -> None:
    """skops with `os.system` in a FunctionTransformer, and the MLmodel file trusting it."""
    hostile = make_pipeline(FunctionTransformer(os.system), LogisticRegression())
    folder = tmp_path / "m"
    import skops.io

    folder.mkdir()
    skops.io.dump(hostile, folder / "model.skops")
    types = skops.io.get_untrusted_types(file=folder / "model.skops")
    (folder / "MLmodel").write_text(
        yaml.safe_dump(
            {
                "flavors": {
                    "sklearn": {
                        "pickled_model": "model.skops",
                        "serialization_format": "skops",
                        "skops_trusted_types": types,
                    }
                }
            }
        )
    )
    with pytest.raises(registry.UnsafeModel, match=r"allow-list.*system"):
        registry.load_model(str(folder))


def test_shipped_code_and_files_outside_the_model_are_refused(tmp_path: Path, fitted) -> None:
    folder = _save(fitted, tmp_path / "m", "skops")
    meta = yaml.safe_load((folder / "MLmodel").read_text())
    escaped = {
        **meta,
        "flavors": {**meta["flavors"], "sklearn": {**meta["flavors"]["sklearn"], "pickled_model": "../x"}},
    }
    (folder / "MLmodel").write_text(yaml.safe_dump(escaped))
    with pytest.raises(registry.UnsafeModel, match="not a file inside"):
        registry.load_model(str(folder))
    coded = {**meta, "flavors": {**meta["flavors"], "sklearn": {**meta["flavors"]["sklearn"], "code": "code"}}}
    (folder / "MLmodel").write_text(yaml.safe_dump(coded))
    with pytest.raises(registry.UnsafeModel, match="ships code"):
        registry.load_model(str(folder))
