import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from components.data.extract import ExtractionError, dataset_name_for, extract_table


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", None], "y": [0, 1, 0]})


def test_csv_and_parquet_round_trip(tmp_path: Path, frame: pd.DataFrame) -> None:
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_parquet(tmp_path / "t.parquet", index=False)
    assert extract_table(str(tmp_path / "t.csv"))["a"].tolist() == [1, 2, 3]
    assert extract_table(str(tmp_path / "t.parquet")).shape == (3, 3)


def test_folder_and_glob_concatenate_in_name_order(tmp_path: Path, frame: pd.DataFrame) -> None:
    frame.to_parquet(tmp_path / "b2.parquet", index=False)
    frame.assign(a=[7, 8, 9]).to_parquet(tmp_path / "b1.parquet", index=False)
    assert extract_table(str(tmp_path))["a"].tolist() == [7, 8, 9, 1, 2, 3]
    assert len(extract_table(str(tmp_path / "b*.parquet"))) == 6


def test_sql_query(tmp_path: Path, frame: pd.DataFrame) -> None:
    db = tmp_path / "d.db"
    with sqlite3.connect(db) as connection:
        frame.to_sql("loans", connection, index=False)
    out = extract_table(f"sqlite:///{db}", "select a, y from loans where a > 1")
    assert out.to_dict("list") == {"a": [2, 3], "y": [1, 0]}


def test_sql_needs_a_query_and_valid_sql(tmp_path: Path) -> None:
    with pytest.raises(ExtractionError, match="SQL query"):
        extract_table(f"sqlite:///{tmp_path / 'd.db'}")
    with pytest.raises(ExtractionError, match="query failed"):
        extract_table(f"sqlite:///{tmp_path / 'd.db'}", "select * from missing")


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("empty.csv", b"", "empty"),
        ("bad.parquet", b"not parquet at all", "not a valid parquet"),
        ("data.json", b"{}", "unsupported file type"),
    ],
)
def test_unreadable_files_are_explained(tmp_path: Path, name: str, content: bytes, fragment: str) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ExtractionError, match=fragment):
        extract_table(str(tmp_path / name))


def test_missing_source_and_mixed_kinds(tmp_path: Path, frame: pd.DataFrame) -> None:
    with pytest.raises(ExtractionError, match="not found"):
        extract_table(str(tmp_path / "nope.csv"))
    frame.to_csv(tmp_path / "a.csv", index=False)
    frame.to_parquet(tmp_path / "b.parquet", index=False)
    (tmp_path / "_answer_key.csv").write_text("not,data\n")
    (tmp_path / ".partial.parquet").write_bytes(b"half a file")
    both = extract_table(str(tmp_path))  # one batch per file, whatever its format; _ and . files skipped
    assert len(both) == 2 * len(frame)


def test_files_with_different_columns_are_refused(tmp_path: Path, frame: pd.DataFrame) -> None:
    frame.to_csv(tmp_path / "a.csv", index=False)
    frame.drop(columns="b").to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(ExtractionError, match="columns"):
        extract_table(str(tmp_path))


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("/x/Loan Book.csv", "loan_book"),
        ("/x/batches/", "batches"),
        ("/x/batches/*.parquet", "batches"),
        ("postgresql://h/db", "db"),
    ],
)
def test_dataset_names(source: str, name: str) -> None:
    assert dataset_name_for(source) == name
