"""Validation: suites run through GX Checkpoints in a file context, one process at a time."""

from __future__ import annotations

import copy
import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from components.data.contract.report import ValidationReport, report_from
from components.data.contract.suites import ContractError

if TYPE_CHECKING:
    import great_expectations as gx


def _normalize_for_gx(frame: pd.DataFrame) -> pd.DataFrame:
    """Text and categorical columns as object dtype, the one text type GX's type checks know.

    pandas 3 reads text as the `str` dtype, which GX 1.x type checks do not recognise.
    """
    text = [c for c in frame.columns if isinstance(frame[c].dtype, (pd.StringDtype, pd.CategoricalDtype))]
    if not text:
        return frame
    return frame.astype({c: object for c in text})


@contextmanager
def _exclusive(gx_dir: Path) -> Iterator[None]:
    """One process at a time in a GX file context: its stores are read-modify-write files, and two
    runs adding the same checkpoint at once fail ('Cannot add Checkpoint ... already exists')."""
    gx_dir.mkdir(parents=True, exist_ok=True)
    with open(gx_dir / ".mlops.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Validator:
    """Runs suites through GX Checkpoints in a file context (Data Docs under `gx_dir`).

    Safe to use from several processes on one workspace: context changes are serialized.
    """

    def __init__(self, gx_dir: Path, data_docs: bool = True):
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        logging.getLogger("great_expectations").setLevel(logging.WARNING)
        self.gx_dir = gx_dir
        self._gx = gx
        with _exclusive(gx_dir):
            self.context = gx.get_context(mode="file", project_root_dir=str(gx_dir))
            self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
            try:
                self.datasource = self.context.data_sources.get("pandas")
            except KeyError:
                self.datasource = self.context.data_sources.add_pandas("pandas")
        self.data_docs = data_docs

    def _suite(self, suite: dict[str, Any]) -> gx.ExpectationSuite:
        # Deep copies: GX fills in defaults on the dicts it is given, and the caller's suite must not change.
        expectations = [
            copy.deepcopy({k: v for k, v in e.items() if k not in ("id", "rendered_content")})
            for e in suite["expectations"]
        ]
        built = self._gx.ExpectationSuite(
            name=suite["name"],
            expectations=expectations,
            meta=copy.deepcopy(suite.get("meta")),
            notes=suite.get("notes"),
        )
        if len(built.expectations) != len(expectations):
            raise ContractError(
                f"suite {suite['name']!r}: {len(expectations) - len(built.expectations)} expectation(s) "
                "are not valid GX expectations; check their type and kwargs"
            )
        return built

    def _batch_definition(self, asset_name: str) -> Any:
        try:
            asset = self.datasource.get_asset(asset_name)
        except LookupError:
            asset = self.datasource.add_dataframe_asset(name=asset_name)  # type: ignore[attr-defined]
        try:
            return asset.get_batch_definition("whole_dataframe")
        except KeyError:
            return asset.add_batch_definition_whole_dataframe("whole_dataframe")

    def validate(
        self,
        frame: pd.DataFrame,
        suite: dict[str, Any],
        run_name: str | None = None,
        data_docs: bool | None = None,
    ) -> ValidationReport:
        """Run the suite through a Checkpoint; `data_docs` (default: the validator's) updates the docs site."""
        with _exclusive(self.gx_dir):
            return self._validate(frame, suite, run_name, data_docs)

    def _validate(
        self, frame: pd.DataFrame, suite: dict[str, Any], run_name: str | None, data_docs: bool | None
    ) -> ValidationReport:
        from great_expectations.core.run_identifier import RunIdentifier

        gx = self._gx
        docs = self.data_docs if data_docs is None else data_docs
        built = self._suite(suite)
        name = built.name
        if not docs:
            # No docs, no stored results: validate the batch directly (the per-batch search of
            # `screen_batches`); the Checkpoint's bookkeeping would cost seconds per call.
            batch = self._batch_definition(name).get_batch(batch_parameters={"dataframe": _normalize_for_gx(frame)})
            outcome = batch.validate(built, result_format={"result_format": "SUMMARY", "partial_unexpected_count": 10})
            return report_from(name, outcome, None)
        definition = gx.ValidationDefinition(name=name, data=self._batch_definition(name), suite=built)
        actions = [gx.checkpoint.UpdateDataDocsAction(name="update_data_docs")] if docs else []
        checkpoint = self.context.checkpoints.add_or_update(
            gx.Checkpoint(
                name=name,
                validation_definitions=[definition],
                actions=actions,
                result_format={"result_format": "SUMMARY", "partial_unexpected_count": 10},
            )
        )
        result = checkpoint.run(
            batch_parameters={"dataframe": _normalize_for_gx(frame)},
            run_id=RunIdentifier(run_name=run_name) if run_name else None,
        )
        key, suite_result = next(iter(result.run_results.items()))
        docs_url = None
        if docs:
            urls = self.context.get_docs_sites_urls(resource_identifier=key)
            docs_url = urls[0]["site_url"] if urls else None
        return report_from(name, suite_result, docs_url)
