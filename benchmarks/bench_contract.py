"""Data contracts on real tables: clean batches pass, corruption is refused, drift gets through.

For each table (real public tables that ship inside PyPI packages, and the loan generator) and
each reference size (500, 2,000 and 20,000 rows where the table has room), the rows are shuffled
once; the first `size` rows are the reference that the contract is profiled from, exactly as
`mlops init` / `mlops expectations init` profile it (the project's default tolerances), and the
rest is cut into later batches of up to 1,000 rows. Then, against that contract:

Each batch goes through the screening the training flow and monitoring use (`screen_with`): rows
breaking a row rule are set aside, a batch with more than `validation.max_bad_row_share` of them
or a batch-level break is rejected, and values beyond the reference's range are judged drift.

- clean: every later batch, as it is (goal: 0 rejected; the rows set aside are counted);
- corrupt: one later batch broken in each way of the contract tests' list (missing, extra or
  retyped column, unseen category, x10, /1000, C->F, a null-rate jump, NaN in a complete column, a
  batch of copies, an empty batch, an infinite value, an unseen label): goal: each refused, the
  batch rejected or, for the row-level cases, every broken row set aside;
- shifted: one later batch moved by a realistic amount (a numeric feature +25%, shifted by half
  its standard deviation, its top 5% stretched by half, and a categorical feature's commonest
  value's share halved): goal: each accepted, so that monitoring judges it as drift and retraining
  learns it. "as drift" counts the shifts the contract's report itself calls drift (values beyond
  the reference's range, a median outside its 35-65% quantiles); "monitoring" those whose moved
  column monitoring's drift test (the defaults) flags against the reference; "clean flagged" the
  features of clean batches that test flags (false alarms; a window drifts only when 20% of its
  features do).

Label review: 5% of the labels of each classification table flipped at known rows, reviewed with
the project's default reviewer exactly as the training flow does: precision and recall (goal
precision >= 0.8 and recall >= 0.6). Beside it, what the table allows: the highest recall at
precision >= 0.8 of any cut of each candidate reviewer's ranking, the cut chosen in hindsight
(knowing the flipped rows), and for the loan generator the same for its true P(default | x): a
flipped label on a row whose class was a coin toss looks like any unlucky row.

Run with `make bench-contract`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from contract_labels import GOAL_PRECISION, GOAL_RECALL, review
from contract_sources import Source, config_for, load_sources

from components.core.config import MonitoringConfig
from components.data.contract import Validator, profile_from_config
from components.data.extract import Batch
from components.data.quarantine import Screening, screen_with
from components.modeling.prepare import infer_feature_spec
from components.monitoring.monitor import categorical_drift, numeric_drift

SIZES = (500, 2_000, 20_000)
BATCH_ROWS = 1_000
MAX_CLEAN_BATCHES = 10
NOISE = 0.05
DEFAULT_TABLES = ("arrests", "loanapp", "seattle_weather", "happiness", "nyc_weather", "census2000")
LABEL_TABLES = ("penguins", "titanic", "cars", "hearts")
UNSEEN = "zz-never-seen"


@dataclass
class Outcome:
    source: str
    size: int
    clean: tuple[int, int] = (0, 0)  # rejected, tried
    clean_set_aside: tuple[int, int] = (0, 0)  # rows set aside, rows tried
    clean_reasons: list[str] = field(default_factory=list)
    corrupt_missed: list[str] = field(default_factory=list)
    corrupt_tried: int = 0
    shift_rejected: list[str] = field(default_factory=list)
    shift_tried: int = 0
    shift_drift: int = 0  # accepted shifts the report calls drift
    shift_monitored: int = 0  # accepted shifts whose moved column monitoring's drift test flags
    clean_flagged: tuple[int, int] = (0, 0)  # features of accepted clean batches monitoring flags, tested
    clean_drifted: int = 0  # accepted clean batches monitoring would call drift (drift_share of features)
    seconds: float = 0.0


def _roles(source: Source, frame: pd.DataFrame) -> tuple[str | None, str | None]:
    """A complete numeric feature with a nonzero median, and a categorical feature of a few values."""
    features = [c for c in frame.columns if c not in (source.target, source.id_column)]
    numeric = [
        c
        for c in features
        if pd.api.types.is_numeric_dtype(frame[c])
        and not pd.api.types.is_bool_dtype(frame[c])
        and frame[c].notna().all()
        and frame[c].nunique() > 20
        and frame[c].median() != 0
    ]
    categorical = [
        c
        for c in features
        if not pd.api.types.is_numeric_dtype(frame[c])
        and not pd.api.types.is_datetime64_any_dtype(frame[c])
        and 2 <= frame[c].nunique() <= 30
    ]
    return (numeric[0] if numeric else None), (categorical[0] if categorical else None)


Corruption = tuple[Callable[[pd.DataFrame], pd.DataFrame], int]  # the break, and how many first rows it breaks
BATCH = 0  # ... or the whole batch: refused means rejected


def _corruptions(source: Source, num: str | None, cat: str | None) -> dict[str, Corruption]:
    cases: dict[str, Corruption] = {
        "extra column": (lambda f: f.assign(channel="web"), BATCH),
        "batch of copies": (lambda f: pd.concat([f, f], ignore_index=True), BATCH),
        "empty batch": (lambda f: f.head(0), BATCH),
    }
    if num is not None:
        cases |= {
            "missing column": (lambda f: f.drop(columns=[num]), BATCH),
            "numbers as text": (lambda f: f.astype({num: str}), BATCH),
            "x10": (lambda f: f.assign(**{num: f[num] * 10}), BATCH),
            "/1000": (lambda f: f.assign(**{num: f[num] / 1000}), BATCH),
            "C->F": (lambda f: f.assign(**{num: f[num] * 1.8 + 32}), BATCH),
            "null-rate jump": (lambda f: f.assign(**{num: f[num].mask(np.arange(len(f)) < len(f) // 2)}), BATCH),
            "NaN in a complete column": (lambda f: f.assign(**{num: f[num].mask(np.arange(len(f)) < 3)}), 3),
            "infinite value": (
                lambda f: f.assign(**{num: f[num].astype("float64").mask(np.arange(len(f)) == 0, np.inf)}),
                1,
            ),
        }
    if cat is not None:
        cases["unseen category"] = (
            lambda f: f.assign(**{cat: f[cat].astype(object).mask(np.arange(len(f)) < 5, UNSEEN)}),
            5,
        )
    if source.task != "regression":

        def unseen_label(f: pd.DataFrame) -> pd.DataFrame:
            labels = f[source.target].astype(object).copy()
            labels.iloc[0] = UNSEEN if any(isinstance(v, str) for v in labels) else 987654
            return f.assign(**{source.target: labels})

        cases["unseen label"] = (unseen_label, 1)
    return cases


def _shifts(
    num: str | None, cat: str | None, reference: pd.DataFrame, pool: pd.DataFrame, seed: int
) -> dict[str, Callable[[pd.DataFrame], pd.DataFrame]]:
    cases: dict[str, Callable[[pd.DataFrame], pd.DataFrame]] = {}
    if num is not None:
        std = float(reference[num].std())
        cases |= {
            "+25%": lambda f: f.assign(**{num: f[num] * 1.25}),
            "+0.5 sd": lambda f: f.assign(**{num: f[num] + 0.5 * std}),
            "top 5% x1.5": lambda f: f.assign(**{num: f[num].where(f[num] < f[num].quantile(0.95), f[num] * 1.5)}),
        }
    if cat is not None:

        def mix(f: pd.DataFrame) -> pd.DataFrame:
            # The commonest category's share halved, the others' grown in proportion: distinct later
            # rows drawn with weights (the commonest's rows at weight w, w s / (w s + 1 - s) = s / 2),
            # so that the batch holds no copies.
            shares = pool[cat].value_counts(normalize=True)
            top, s = shares.index[0], float(shares.iloc[0])
            weights = np.where(pool[cat] == top, (1 - s) / (2 - s), 1.0)
            return pool.sample(n=min(len(f), len(pool)), weights=weights, random_state=seed).reset_index(drop=True)

        cases["category mix"] = mix
    return cases


def _reasons(screening: Screening) -> list[str]:
    reports = [r.report for r in screening.rejected] or [screening.report]
    return [f"{f.expectation}({f.column})" for report in reports for f in report.breaks]


Screen = Callable[[pd.DataFrame], Screening]
DriftTest = Callable[..., Any]
Roles = tuple[str | None, str | None]  # the numeric and the categorical feature that corruptions and shifts move


def _screen_clean(
    outcome: Outcome,
    batches: list[pd.DataFrame],
    screen: Screen,
    reference: pd.DataFrame,
    tests: dict[str, DriftTest],
    monitoring: MonitoringConfig,
) -> None:
    """Clean batches: how many the contract rejects, the rows it sets aside, what monitoring flags."""
    rejected = aside = flagged = tested = 0
    for batch in batches:
        screening = screen(batch)
        aside += screening.rows_set_aside
        if not screening.success:
            rejected += 1
            outcome.clean_reasons += _reasons(screening)
            continue
        outcome.clean_reasons += [r for a in screening.set_aside for r in a.reasons()]
        assert screening.frame is not None
        drifted = sum(test(c, reference[c], screening.frame[c], monitoring).drifted for c, test in tests.items())
        flagged, tested = flagged + drifted, tested + len(tests)
        outcome.clean_drifted += int(drifted >= monitoring.drift_share * len(tests))
    outcome.clean_flagged = (flagged, tested)
    outcome.clean = (rejected, len(batches))
    outcome.clean_set_aside = (aside, sum(len(b) for b in batches))


def _try_corruptions(outcome: Outcome, source: Source, probe: pd.DataFrame, screen: Screen, roles: Roles) -> None:
    """Each corruption of a clean batch: let through when accepted without its broken rows set aside."""
    num, cat = roles
    before = {int(i) for a in screen(probe).set_aside for i in a.rows.index}
    for name, (corrupt, broken) in _corruptions(source, num, cat).items():
        outcome.corrupt_tried += 1
        screening = screen(corrupt(probe))
        if screening.success:
            caught = {int(i) for a in screening.set_aside for i in a.rows.index} - before
            if broken == BATCH or not set(range(broken)) <= caught | before:
                outcome.corrupt_missed.append(name)


def _try_shifts(
    outcome: Outcome,
    probe: pd.DataFrame,
    screen: Screen,
    roles: Roles,
    reference: pd.DataFrame,
    rest: pd.DataFrame,
    tests: dict[str, DriftTest],
    monitoring: MonitoringConfig,
    seed: int,
) -> None:
    """Each plausible shift: refused (wrongly), accepted as drift, and flagged by monitoring's test."""
    num, cat = roles
    for name, shift in _shifts(num, cat, reference, rest, seed).items():
        outcome.shift_tried += 1
        screening = screen(shift(probe))
        if not screening.success:
            outcome.shift_rejected.append(f"{name}: " + ", ".join(_reasons(screening)))
            continue
        if screening.report.judgement == "drift":
            outcome.shift_drift += 1
        assert screening.frame is not None
        column = str(cat if name == "category mix" else num)
        test = tests.get(column, categorical_drift if name == "category mix" else numeric_drift)
        if test(column, reference[column], screening.frame[column], monitoring).drifted:
            outcome.shift_monitored += 1


def run_source(source: Source, size: int, validator: Validator, seed: int) -> Outcome:
    started = time.perf_counter()
    frame = source.frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    reference, rest = frame.iloc[:size], frame.iloc[size:].reset_index(drop=True)
    config = config_for(source)
    suite = profile_from_config(reference, f"bench_{source.name}_{size}", config, task=source.task)

    def screen(batch: pd.DataFrame) -> Screening:
        return screen_with(
            validator,
            [Batch("batch", None, batch.reset_index(drop=True))],
            suite,
            max_bad_row_share=config.validation.max_bad_row_share,
            target=source.target,
        )

    outcome = Outcome(source.name, size)
    batches = [rest.iloc[i : i + BATCH_ROWS] for i in range(0, len(rest), BATCH_ROWS)]
    batches = [b for b in batches if len(b) >= BATCH_ROWS // 2][:MAX_CLEAN_BATCHES]
    monitoring = MonitoringConfig()
    spec = infer_feature_spec(reference, source.target, source.id_column)  # what monitoring compares
    tests = {c: numeric_drift for c in spec.numeric} | {c: categorical_drift for c in spec.categorical}
    _screen_clean(outcome, batches, screen, reference, tests, monitoring)
    probe = batches[0].reset_index(drop=True)
    roles = _roles(source, reference)
    _try_corruptions(outcome, source, probe, screen, roles)
    _try_shifts(outcome, probe, screen, roles, reference, rest, tests, monitoring, seed)
    outcome.seconds = time.perf_counter() - started
    return outcome


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", default=",".join((*DEFAULT_TABLES, "loans")), help="comma-separated names")
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-labels", action="store_true", help="skip the label-review part")
    parser.add_argument(
        "--label-tables",
        default=",".join(LABEL_TABLES),
        help="classification tables reviewed besides --tables (too small for the contract part)",
    )
    return parser.parse_args()


def _contract_part(sources: list[Source], sizes: list[int], seed: int) -> list[Outcome]:
    """Each table at each reference size: clean batches, corruptions and shifts through the contract."""
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory() as gx:
        validator = Validator(Path(gx), data_docs=False)
        for source in sources:
            for size in sizes:
                if len(source.frame) < size + BATCH_ROWS:
                    continue
                outcome = run_source(source, size, validator, seed)
                outcomes.append(outcome)
                refused = outcome.corrupt_tried - len(outcome.corrupt_missed)
                accepted = outcome.shift_tried - len(outcome.shift_rejected)
                print(
                    f"{source.name} ({len(source.frame):,} rows), reference {size:,}: clean rejected "
                    f"{outcome.clean[0]}/{outcome.clean[1]}, corrupt refused {refused}/{outcome.corrupt_tried}, "
                    f"shifts accepted {accepted}/{outcome.shift_tried} ({outcome.seconds:.0f} s)",
                    flush=True,
                )
    return outcomes


def _print_outcomes(outcomes: list[Outcome]) -> None:
    """The contract part's table, what each table let through or refused, and the goals."""
    print(
        f"\n{'table':<16}{'reference':>10}{'clean rejected':>16}{'clean rows aside':>18}"
        f"{'corrupt refused':>17}{'shifts accepted':>17}{'as drift':>10}{'monitoring':>12}{'clean flagged':>15}"
    )
    print("-" * 131)
    for o in outcomes:
        print(
            f"{o.source:<16}{o.size:>10,}{f'{o.clean[0]} of {o.clean[1]}':>16}"
            f"{f'{o.clean_set_aside[0] / max(o.clean_set_aside[1], 1):.2%}':>18}"
            f"{f'{o.corrupt_tried - len(o.corrupt_missed)} of {o.corrupt_tried}':>17}"
            f"{f'{o.shift_tried - len(o.shift_rejected)} of {o.shift_tried}':>17}{o.shift_drift:>10}"
            f"{o.shift_monitored:>12}{f'{o.clean_flagged[0]} of {o.clean_flagged[1]}':>15}"
        )
    print()
    for o in outcomes:
        if o.clean_reasons:
            print(
                f"{o.source} @ {o.size:,}: clean batches rejected or rows set aside on "
                f"{', '.join(sorted(set(o.clean_reasons)))}"
            )
        if o.corrupt_missed:
            print(f"{o.source} @ {o.size:,}: corruption let through: {', '.join(o.corrupt_missed)}")
        for shift in o.shift_rejected:
            print(f"{o.source} @ {o.size:,}: shift refused as corrupt: {shift}")
    clean = sum(o.clean[0] for o in outcomes)
    missed = sum(len(o.corrupt_missed) for o in outcomes)
    refused = sum(len(o.shift_rejected) for o in outcomes)
    tried = sum(o.shift_tried for o in outcomes)
    monitored = sum(o.shift_monitored for o in outcomes)
    false_windows = sum(o.clean_drifted for o in outcomes)
    print(
        f"\nclean batches rejected: {clean} (goal 0: {'met' if clean == 0 else 'NOT met'}); "
        f"corruption let through: {missed} (goal 0: {'met' if missed == 0 else 'NOT met'}); "
        f"shifts refused: {refused} (goal 0: {'met' if refused == 0 else 'NOT met'}); "
        f"shifts monitoring flags: {monitored} of {tried}; clean batches monitoring calls drift: {false_windows}"
    )


def _label_part(sources: list[Source], label_tables: str, seed: int) -> None:
    """Label review of every classification table, with flipped labels at known rows."""
    print(
        f"\nlabel review, {NOISE:.0%} of labels flipped at known rows, the defaults (reviewer chosen on labels "
        "it replaces itself; est. = its own estimate):"
    )
    extra = [t for t in label_tables.split(",") if t and t not in {s.name for s in sources}]
    for source in [*sources, *load_sources(extra, seed)]:
        if source.task == "regression":
            continue
        result = review(source, seed)
        if isinstance(result, str):
            print(f"  {source.name}: skipped: {result}")
            continue
        met = result["precision"] >= GOAL_PRECISION and result["recall"] >= GOAL_RECALL
        est_p, est_r = result["estimated"]
        estimate = f"est. {est_p:.2f}/{est_r:.2f}" if est_p is not None else "nothing flagged: " + result["note"]
        print(
            f"  {source.name} ({result['rows']:,} rows, {result['reviewer']}): flagged {result['flagged']}, "
            f"precision {result['precision']:.2f}, recall {result['recall']:.2f} "
            f"(goal >= {GOAL_PRECISION} and >= {GOAL_RECALL}: {'met' if met else 'NOT met'}; "
            f"{result['seconds']:.1f} s); {estimate}",
            flush=True,
        )
        ceilings = ", ".join(f"{name} {recall:.2f}" for name, recall in result["ceilings"].items())
        print(f"    best recall at precision >= {GOAL_PRECISION} with the cut chosen in hindsight: {ceilings}")


def main() -> None:
    args = _parse_args()
    warnings.filterwarnings("ignore")
    sources = load_sources(args.tables.split(","), args.seed)
    sizes = [int(s) for s in args.sizes.split(",")]
    _print_outcomes(_contract_part(sources, sizes, args.seed))
    if args.no_labels:
        return
    _label_part(sources, args.label_tables, args.seed)


if __name__ == "__main__":
    main()
