"""Files are written one way: staged beside their final name, renamed into place on success."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.core.files import staged, write_text_atomic


def test_a_failed_write_leaves_the_old_file_and_no_staging_file(tmp_path: Path) -> None:
    target = write_text_atomic(tmp_path / "report.json", "old")
    with pytest.raises(RuntimeError), staged(target) as staging:
        staging.write_text("half of the new")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


@pytest.mark.parametrize("durable", [True, False])
def test_a_finished_write_replaces_the_file(tmp_path: Path, durable: bool) -> None:
    target = tmp_path / "deep" / "scores.parquet"
    with staged(target, durable=durable) as staging:
        assert staging.parent == target.parent and staging.name.startswith(".scores.parquet.")
        staging.write_bytes(b"new")
    assert target.read_bytes() == b"new" and [p.name for p in target.parent.iterdir()] == ["scores.parquet"]
