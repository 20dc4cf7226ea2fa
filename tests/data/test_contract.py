"""The data contract: profiled suites accept fresh clean batches and reject broken ones."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.data.contract import (
    ContractError,
    Validator,
    expected_columns,
    load_suite,
    profile_suite,
    save_suite,
    suite_path,
)
from components.simulation.simulate import ID_COLUMN, TARGET, Scenario, generate_loans


@pytest.fixture(scope="module")
def suite(loans: pd.DataFrame) -> dict:
    return profile_suite(loans, "loans", target=TARGET, id_column=ID_COLUMN)


@pytest.fixture(scope="module")
def validator(tmp_path_factory: pytest.TempPathFactory) -> Validator:
    return Validator(tmp_path_factory.mktemp("gx"), data_docs=False)


def test_suite_round_trips_as_readable_json(suite: dict, tmp_path: Path) -> None:
    path = save_suite(suite, suite_path(tmp_path, "loans"))
    assert path.name == "loans.json"
    text = path.read_text()
    assert '\n  "expectations": [' in text  # indented for people to review
    assert load_suite(path) == suite
    assert expected_columns(suite)[0] == ID_COLUMN


def test_suite_contents(suite: dict) -> None:
    kinds = {(e["type"], e["kwargs"].get("column")) for e in suite["expectations"]}
    assert ("expect_column_values_to_be_unique", ID_COLUMN) in kinds
    assert ("expect_column_values_to_be_in_set", "region") in kinds
    assert ("expect_column_values_to_be_between", "credit_score") in kinds
    assert ("expect_column_median_to_be_between", "annual_income") in kinds
    target_set = next(
        e
        for e in suite["expectations"]
        if e["type"] == "expect_column_values_to_be_in_set" and e["kwargs"]["column"] == TARGET
    )
    assert target_set["kwargs"]["value_set"] == [0, 1]


def test_no_false_alarms_on_20_clean_batches(validator: Validator) -> None:
    """The false-alarm rate on fresh clean batches (new seeds, later weeks) must be 0 of 20."""
    from components.simulation.simulate import generate_batches

    reference = pd.concat([b.frame for b in generate_batches(4, 5000, seed=42)], ignore_index=True)
    suite = profile_suite(reference, "reference", target=TARGET, id_column=ID_COLUMN)
    alarms = []
    for seed in range(100, 120):
        batch = generate_loans(5000, seed=seed, batch_index=4 + seed % 8).frame
        report = validator.validate(batch, suite, data_docs=False)
        if not report.success:
            alarms.append((seed, report.summary()))
    assert alarms == [], f"{len(alarms)} of 20 clean batches rejected: {alarms[:2]}"


def _corrupt(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    if name == "missing column":
        return frame.drop(columns=["region"])
    if name == "numbers as text":
        return frame.astype({"credit_score": str})
    if name == "extra column":
        return frame.assign(channel="web")
    if name == "unseen category":
        frame.loc[frame.index[:5], "purpose"] = "crypto"
        return frame
    if name == "unit change":
        return generate_loans(len(frame), seed=3, scenario=Scenario(unit_change=True)).frame
    if name == "null-rate jump":
        frame.loc[frame.index[: len(frame) // 2], "annual_income"] = np.nan
        return frame
    if name == "all-duplicate batch":
        return pd.concat([frame, frame], ignore_index=True)
    if name == "scaled by 10":
        return frame.assign(loan_amount=frame["loan_amount"] * 10)
    if name == "celsius to fahrenheit":
        return frame.assign(interest_rate=frame["interest_rate"] * 1.8 + 32)
    if name == "NaN in a complete column":
        frame.loc[frame.index[:3], "loan_amount"] = np.nan
        return frame
    if name == "empty batch":
        return frame.head(0)
    if name == "infinite values":
        frame.loc[frame.index[0], "loan_amount"] = np.inf
        return frame
    if name == "unseen label":
        frame.loc[frame.index[0], TARGET] = 2
        return frame
    raise AssertionError(name)


@pytest.mark.parametrize(
    ("case", "expectation", "column"),
    [
        ("missing column", "expect_column_to_exist", "region"),
        ("numbers as text", "expect_column_values_to_be_in_type_list", "credit_score"),
        ("extra column", "expect_table_columns_to_match_ordered_list", None),
        ("unseen category", "expect_column_values_to_be_in_set", "purpose"),
        ("unit change", "expect_column_median_to_be_between", "annual_income"),
        ("null-rate jump", "expect_column_values_to_not_be_null", "annual_income"),
        ("all-duplicate batch", "expect_column_values_to_be_unique", ID_COLUMN),
        ("scaled by 10", "expect_column_median_to_be_between", "loan_amount"),
        ("celsius to fahrenheit", "expect_column_median_to_be_between", "interest_rate"),
        ("NaN in a complete column", "expect_column_values_to_not_be_null", "loan_amount"),
        ("empty batch", "expect_table_row_count_to_be_between", None),
        ("infinite values", "expect_column_values_to_be_between", "loan_amount"),
        ("unseen label", "expect_column_values_to_be_in_set", TARGET),
    ],
)
def test_broken_batches_are_rejected_with_the_reason(
    suite: dict, validator: Validator, loans: pd.DataFrame, case: str, expectation: str, column: str | None
) -> None:
    report = validator.validate(_corrupt(case, loans), suite)
    assert not report.success
    assert (expectation, column) in {(f.expectation, f.column) for f in report.failures}, report.summary()
    assert all(f.message for f in report.failures)


def test_missing_column_reports_only_the_root_cause(suite: dict, validator: Validator, loans: pd.DataFrame) -> None:
    report = validator.validate(loans.drop(columns=["region"]), suite)
    messages = [f.message for f in report.failures if f.column == "region"]
    assert messages and not any("could not be evaluated" in m for m in messages)
    assert "missing ['region']" in report.summary()


def test_data_docs_are_built(suite: dict, loans: pd.DataFrame, tmp_path: Path) -> None:
    report = Validator(tmp_path / "gx").validate(loans.drop(columns=["region"]), suite, run_name="r1")
    assert report.docs_url and report.docs_url.startswith("file://")
    page = Path(report.docs_url.removeprefix("file://"))
    assert page.is_file() and "region" in page.read_text()


@pytest.mark.parametrize(
    ("content", "fragment"),
    [("{not json", "not valid JSON"), ('{"expectations": []}', "not a GX suite")],
)
def test_bad_suite_files(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "s.json"
    path.write_text(content)
    with pytest.raises(ContractError, match=fragment):
        load_suite(path)
    with pytest.raises(ContractError, match="no expectation suite"):
        load_suite(tmp_path / "absent.json")


def test_unknown_expectation_type_is_refused(suite: dict, validator: Validator, loans: pd.DataFrame) -> None:
    broken = {**suite, "expectations": [*suite["expectations"], {"type": "expect_magic", "kwargs": {}}]}
    with pytest.raises(ContractError, match="not valid GX expectations"):
        validator.validate(loans, broken)


def test_a_profile_accepts_the_data_it_was_profiled_from_whatever_its_shape(validator: Validator) -> None:
    """Real tables of few coarse columns repeat whole rows by nature (two passengers of one class, sex and
    age); a regression target gets ranges, not a value set; unlabeled rows are allowed."""
    rng = np.random.default_rng(0)
    n = 1000
    coarse = pd.DataFrame(
        {
            "cls": rng.choice(["1st", "2nd", "3rd"], n),
            "sex": rng.choice(["f", "m"], n),
            "age": rng.choice([np.nan, 20.0, 30.0, 40.0], n),
            "price": (rng.gamma(2, 20, n) // 10 * 10).round(),  # prices in tens: whole rows repeat
        }
    )
    coarse.loc[:50, "price"] = np.nan  # rows whose label has not arrived
    suite = profile_suite(coarse, "coarse", target="price", task="regression")
    assert validator.validate(coarse, suite, data_docs=False).success
    kinds = {(e["type"], e["kwargs"].get("column")) for e in suite["expectations"]}
    assert ("expect_column_values_to_be_between", "price") in kinds
    assert ("expect_column_values_to_be_in_set", "price") not in kinds
    repeated = coarse.duplicated(keep=False).mean()
    assert repeated > 0.9  # ... so a whole-row uniqueness check has nothing left to check
    assert ("expect_compound_columns_to_be_unique", None) not in kinds
    fewer = coarse.drop_duplicates().head(300)
    bounded = profile_suite(fewer, "fewer", target="price", task="regression")
    unique = next(e for e in bounded["expectations"] if e["type"] == "expect_compound_columns_to_be_unique")
    assert unique["kwargs"]["mostly"] == 0.9
    copies = pd.concat([fewer, fewer, fewer], ignore_index=True)  # a batch of copies still stands out
    assert not validator.validate(copies, bounded, data_docs=False).success


def test_profiled_expectations_are_marked_inferred_with_their_evidence(suite: dict) -> None:
    from components.data.contract import DECLARED, INFERRED, origin

    assert {origin(e) for e in suite["expectations"]} == {INFERRED}
    hard = next(
        e
        for e in suite["expectations"]
        if e["kwargs"].get("column") == "loan_amount" and e["meta"].get("check") == "plausible"
    )
    assert hard["kwargs"]["min_value"] == 0 and "never negative in" in hard["meta"]["evidence"]
    written = {"type": "expect_column_values_to_be_between", "kwargs": {"column": "age", "min_value": 18}}
    assert origin(written) == DECLARED  # one a person wrote carries no `inferred` mark


def test_bounds_from_a_small_sample_allow_for_what_it_did_not_see() -> None:
    """'Never negative' and 'never null' need evidence: a 100-row sample gets a lower bound below its
    minimum and a null rate it may reach; 1,000 rows are enough to infer both."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"years": rng.integers(0, 30, 1000).astype(float), "y": rng.integers(0, 2, 1000)})

    def rules(rows: int) -> dict[str, dict]:
        profiled = profile_suite(frame.head(rows), "s", target="y")
        return {
            e["meta"].get("check") or e["type"]: e
            for e in profiled["expectations"]
            if e["kwargs"].get("column") == "years"
        }

    small, large = rules(100), rules(1000)
    assert small["plausible"]["kwargs"]["min_value"] < 0 and "too few" in small["plausible"]["meta"]["evidence"]
    assert 0 < small["null_rate"]["kwargs"]["mostly"] < 1  # 3/n at 95% confidence, widened
    assert large["plausible"]["kwargs"]["min_value"] == 0
    assert "mostly" not in large["complete"]["kwargs"]  # never null: a null is a broken row
    assert small["range"]["kwargs"]["max_value"] >= large["range"]["kwargs"]["max_value"]


def test_drift_is_judged_drift_and_a_unit_change_corrupt(
    suite: dict, validator: Validator, loans: pd.DataFrame
) -> None:
    stretched = loans.assign(
        loan_amount=loans["loan_amount"].where(
            loans["loan_amount"] < loans["loan_amount"].quantile(0.9), loans["loan_amount"] * 1.6
        )
    )
    report = validator.validate(stretched, suite, data_docs=False)
    assert report.success and report.judgement == "drift", report.summary()
    assert "loan_amount" in report.why and "monitoring" in report.why
    assert report.as_dict()["judgement"] == "drift" and report.as_dict()["drift"]
    unit = validator.validate(loans.assign(loan_amount=loans["loan_amount"] * 10), suite, data_docs=False)
    assert not unit.success and unit.judgement == "corrupt" and "refused as corrupt" in unit.why
    assert validator.validate(loans, suite, data_docs=False).judgement == "clean"


def test_a_positive_target_may_move_by_a_factor_but_not_by_a_unit(validator: Validator) -> None:
    """A regression target 2.3x longer (trips under road works) is drift for retraining to learn;
    x10, /1000 and minutes to seconds are unit changes, refused. A feature that doubles at once
    (x1.8 + 32 on an amount) stays refused: the log-scale bound is the target's."""
    rng = np.random.default_rng(7)
    minutes = rng.lognormal(np.log(15), 0.6, 4000)
    frame = pd.DataFrame({"amount": rng.lognormal(np.log(120), 0.4, 4000), "duration_min": minutes})
    profiled = profile_suite(frame.head(2000), "trips", target="duration_min", task="regression")
    later = frame.tail(2000).reset_index(drop=True)
    slower = validator.validate(later.assign(duration_min=later["duration_min"] * 2.3), profiled, data_docs=False)
    assert slower.success and slower.judgement == "drift", slower.summary()
    for factor in (10, 1 / 1000, 60):
        moved = validator.validate(later.assign(duration_min=later["duration_min"] * factor), profiled, data_docs=False)
        assert not moved.success and moved.judgement == "corrupt", (factor, moved.summary())
    fahrenheit = validator.validate(later.assign(amount=later["amount"] * 1.8 + 32), profiled, data_docs=False)
    assert not fahrenheit.success and fahrenheit.judgement == "corrupt", fahrenheit.summary()
    assert validator.validate(later, profiled, data_docs=False).judgement == "clean"
