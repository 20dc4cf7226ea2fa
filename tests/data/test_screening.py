"""Batches are screened against the contract; the rejected ones are kept, with reports, in quarantine."""

import json
from pathlib import Path

import pandas as pd
import pytest

from components.data.contract import Validator, profile_suite
from components.data.extract import Batch, ExtractionError, combine, read_batches
from components.data.quarantine import quarantine, screen_batches
from components.simulation.simulate import ID_COLUMN, TARGET, generate_loans, write_batches


@pytest.fixture(scope="module")
def suite(loans: pd.DataFrame) -> dict:
    return profile_suite(loans, "loans", target=TARGET, id_column=ID_COLUMN)


@pytest.fixture(scope="module")
def validator(tmp_path_factory: pytest.TempPathFactory) -> Validator:
    return Validator(tmp_path_factory.mktemp("gx"))


def _screen(batches: list[Batch], suite: dict, validator: Validator):
    return screen_batches(
        batches,
        suite["name"],
        validate=lambda f: validator.validate(f, suite),
        validate_quietly=lambda f: validator.validate(f, suite, data_docs=False),
    )


def test_clean_folder_is_accepted_in_one_validation(tmp_path: Path, suite: dict, validator: Validator) -> None:
    write_batches(tmp_path, 3, 400, seed=21)
    screening = _screen(read_batches(str(tmp_path)), suite, validator)
    assert screening.success and len(screening.accepted) == 3 and screening.frame is not None
    assert len(screening.frame) == 1200
    assert screening.report.docs_url  # the combined validation updated Data Docs


def test_only_the_bad_batch_of_a_folder_is_rejected(tmp_path: Path, suite: dict, validator: Validator) -> None:
    paths = write_batches(tmp_path, 3, 400, seed=22)
    bad = pd.read_parquet(paths[1])
    bad.loc[bad.index[:4], "purpose"] = "crypto"
    bad.to_parquet(paths[1], index=False)
    screening = _screen(read_batches(str(tmp_path)), suite, validator)
    assert not screening.success
    assert [r.batch.path for r in screening.rejected] == [paths[1]]
    assert {b.path for b in screening.accepted} == {paths[0], paths[2]}
    assert "crypto" in screening.rejected[0].report.summary()
    page = Path(screening.rejected[0].report.docs_url.removeprefix("file://"))
    assert "crypto" in page.read_text(), "Data Docs show why the batch was rejected"


def test_a_unit_change_in_one_new_file_is_not_diluted_by_the_history(
    tmp_path: Path, suite: dict, validator: Validator
) -> None:
    paths = write_batches(tmp_path, 4, 400, seed=25)
    last = pd.read_parquet(paths[-1])
    last.assign(annual_income=last["annual_income"] / 1000).to_parquet(paths[-1], index=False)
    screening = _screen(read_batches(str(tmp_path)), suite, validator)
    assert [r.batch.path for r in screening.rejected] == [paths[-1]]
    assert "annual_income" in screening.rejected[0].report.summary()


def test_trusted_batches_skip_their_own_validation(tmp_path: Path, suite: dict, validator: Validator) -> None:
    from components.data.quarantine import remember_accepted, trusted_batches

    write_batches(tmp_path / "d", 2, 300, seed=26)
    batches = read_batches(str(tmp_path / "d"))
    ledger = tmp_path / "ledger.json"
    assert trusted_batches(ledger, batches, suite) == set()
    remember_accepted(ledger, batches, suite)
    assert trusted_batches(ledger, batches, suite) == {"batch_0000.parquet", "batch_0001.parquet"}
    changed = {**suite, "notes": "edited"}
    assert trusted_batches(ledger, batches, changed) == set(), "a suite change re-validates everything"
    calls: list[int] = []

    def quiet(frame: pd.DataFrame):
        calls.append(len(frame))
        return validator.validate(frame, suite, data_docs=False)

    screen_batches(batches, "loans", lambda f: validator.validate(f, suite), quiet, trusted={"batch_0000.parquet"})
    assert calls == [300], "only the untrusted batch is validated on its own"


def test_a_batch_of_copies_of_earlier_rows_is_rejected(tmp_path: Path, suite: dict, validator: Validator) -> None:
    paths = write_batches(tmp_path, 2, 400, seed=23)
    pd.read_parquet(paths[0]).to_parquet(tmp_path / "batch_0002.parquet", index=False)
    screening = _screen(read_batches(str(tmp_path)), suite, validator)
    assert [r.batch.name for r in screening.rejected] == ["batch_0002.parquet"]
    assert screening.rejected[0].report.failures[0].expectation == "expect_column_values_to_be_unique"


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("empty.csv", b"", "is empty"),
        ("garbage.parquet", b"this is not parquet at all", "not a valid parquet file"),
        ("broken.csv", b'a,b\n1,"unterminated\n', "not a valid csv file"),
    ],
)
def test_unreadable_files_are_rejected_batches(
    tmp_path: Path, suite: dict, validator: Validator, name: str, content: bytes, fragment: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    screening = _screen(read_batches(str(path)), suite, validator)
    assert not screening.success and screening.rejected[0].batch.path == path
    assert fragment in screening.rejected[0].report.summary()


def test_header_only_csv_fails_the_row_count(tmp_path: Path, suite: dict, validator: Validator) -> None:
    path = tmp_path / "header.csv"
    generate_loans(5, seed=1).frame.head(0).to_csv(path, index=False)
    screening = _screen(read_batches(str(path)), suite, validator)
    kinds = {f.expectation for f in screening.rejected[0].report.failures}
    assert "expect_table_row_count_to_be_between" in kinds


def test_missing_source_is_an_error_not_a_rejection(tmp_path: Path) -> None:
    with pytest.raises(ExtractionError, match="not found"):
        read_batches(str(tmp_path / "absent.csv"))


def test_combine_refuses_batches_with_different_columns(tmp_path: Path) -> None:
    a = Batch("a", None, pd.DataFrame({"x": [1]}))
    b = Batch("b", None, pd.DataFrame({"y": [1]}))
    with pytest.raises(ExtractionError, match="unlike the first"):
        combine([a, b])


def test_quarantine_moves_the_file_with_its_report(tmp_path: Path, suite: dict, validator: Validator) -> None:
    source = tmp_path / "landing"
    path = write_batches(source, 1, 300, seed=24)[0]
    frame = pd.read_parquet(path).drop(columns=["region"])
    frame.to_parquet(path, index=False)
    screening = _screen(read_batches(str(path)), suite, validator)
    folders = [
        quarantine(tmp_path / "quarantine", "loans", r, source=str(path), context={"run": "r1"})
        for r in screening.rejected
    ]
    folder = folders[0]
    assert not path.exists(), "a rejected batch leaves the source"
    assert (folder / path.name).is_file()
    report = json.loads((folder / "report.json").read_text())
    manifest = json.loads((folder / "manifest.json").read_text())
    assert report["success"] is False and any("region" in f["message"] for f in report["failed_expectations"])
    assert manifest["original_path"] == str(path) and manifest["run"] == "r1"
    assert pd.read_parquet(folder / path.name).shape == frame.shape  # nothing lost


def test_quarantine_copy_mode_and_sql_batches(tmp_path: Path, suite: dict, validator: Validator) -> None:
    path = tmp_path / "b.csv"
    generate_loans(50, seed=2).frame.assign(extra=1).to_csv(path, index=False)
    rejection = _screen(read_batches(str(path)), suite, validator).rejected[0]
    copied = quarantine(tmp_path / "q", "loans", rejection, source=str(path), mode="copy")
    assert path.exists() and (copied / "b.csv").is_file()
    again = quarantine(tmp_path / "q", "loans", rejection, source=str(path), mode="copy")
    assert again != copied  # never overwrites an earlier quarantine
    sql_batch = Batch("query", None, rejection.batch.frame)
    from components.data.quarantine import Rejection

    written = quarantine(tmp_path / "q", "loans", Rejection(sql_batch, rejection.report), source="sqlite:///x.db")
    assert pd.read_parquet(written / "rows.parquet").shape == rejection.batch.frame.shape


def _validate_in_process(args: tuple[str, int]) -> list[bool]:
    gx_dir, seed = args
    reference = generate_loans(1500, seed=1).frame
    suite = profile_suite(reference, "loans", target=TARGET, id_column=ID_COLUMN)
    validator = Validator(Path(gx_dir))
    return [validator.validate(generate_loans(800, seed=seed + i).frame, suite).success for i in range(3)]


@pytest.mark.slow
def test_two_processes_can_validate_in_one_workspace(tmp_path: Path) -> None:
    """A scheduled run and a manual `expectations validate` may overlap: GX's file stores must not race."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.map(_validate_in_process, [(str(tmp_path / "gx"), 10), (str(tmp_path / "gx"), 20)])
    assert results == [[True] * 3, [True] * 3]


def test_rows_breaking_row_rules_are_set_aside_and_too_many_reject_the_batch(
    suite: dict, validator: Validator, loans: pd.DataFrame
) -> None:
    from components.data.quarantine import quarantine_rows, screen_with

    batch = generate_loans(500, seed=31).frame
    batch.loc[batch.index[:2], "loan_amount"] = -1.0
    batch.loc[batch.index[2], "purpose"] = "crypto"
    batch.loc[batch.index[3], TARGET] = 7  # a label never seen
    screening = screen_with(validator, [Batch("b.parquet", None, batch)], suite, max_bad_row_share=0.02, target=TARGET)
    assert screening.success and screening.rows_set_aside == 4
    assert screening.frame is not None and len(screening.frame) == 496
    (aside,) = screening.set_aside
    assert aside.rows.index.tolist() == [0, 1, 2, 3]
    assert sum(n for rule, n in aside.reasons().items() if rule.startswith("loan_amount: ")) == 2
    assert "got 'crypto'" in aside.rows["set_aside_reason"].iloc[2]
    assert f"{TARGET}: expect_column_values_to_be_in_set, got 7" in aside.rows["set_aside_reason"].iloc[3]

    broken = batch.copy()
    broken.loc[broken.index[:30], "loan_amount"] = -1.0  # 6% of the rows: more than 2%
    rejected = screen_with(validator, [Batch("c.parquet", None, broken)], suite, max_bad_row_share=0.02, target=TARGET)
    assert not rejected.success and rejected.rows_set_aside == 0
    (failure,) = rejected.rejected[0].report.failures
    assert failure.expectation == "rows_within_row_rules" and "max_bad_row_share" in failure.message

    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as root:
        folder = quarantine_rows(Path(root), "loans", aside, source="src")
        written = pd.read_csv(folder / "rows.csv")
        assert written["batch_row"].tolist() == [0, 1, 2, 3] and "set_aside_reason" in written
        assert json.loads((folder / "manifest.json").read_text())["rows"] == 4
