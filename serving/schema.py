"""Request and response models derived from the champion's MLflow signature.

The row model has one field per signature column with its real name and type, so `/docs`
shows them and a wrong field, a wrong type or a missing column is a 400 naming the field.
Numbers must be JSON numbers (no strings, booleans, NaN or infinity); a column the signature
marks optional (it had missing values in training) accepts null, but must still be sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, Strict, create_model

from components.core.errors import UserError

MAX_TEXT_LENGTH = 1024

_NUMBER = Annotated[float, Strict(), Field(allow_inf_nan=False)]
_INTEGER = Annotated[int, Strict()]
_TYPES: dict[str, Any] = {
    "double": _NUMBER,
    "float": _NUMBER,
    "long": _INTEGER,
    "integer": _INTEGER,
    "boolean": Annotated[bool, Strict()],
    "string": Annotated[str, Strict(), Field(max_length=MAX_TEXT_LENGTH)],
    "datetime": datetime,
}


class SchemaError(UserError, ValueError):
    """The model's signature cannot be turned into a request schema."""


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    required: bool


def signature_columns(signature: Any) -> tuple[Column, ...]:
    """The input columns of an MLflow ModelSignature (column-based schemas only)."""
    if signature is None or signature.inputs is None:
        raise SchemaError("the model was logged without a signature; log it with one to serve it")
    inputs = signature.inputs
    if not inputs.has_input_names():
        raise SchemaError("the model's signature has unnamed (tensor) inputs; a tabular model needs named columns")
    columns = []
    for spec in inputs.inputs:
        kind = getattr(spec.type, "name", str(spec.type))
        if kind not in _TYPES:
            raise SchemaError(f"column {spec.name!r} has type {kind!r}, which the service cannot accept")
        columns.append(Column(str(spec.name), kind, bool(getattr(spec, "required", True))))
    return tuple(columns)


def _camel(text: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[\W_]+", text) if part) or "Model"


def row_model(model_name: str, columns: tuple[Column, ...], id_column: str | None = None) -> type[BaseModel]:
    """A pydantic model of one input row: every column required, nullable when optional.

    `id_column`, when given and not a feature, is an optional extra field: it is not used to
    predict, but the prediction log keeps it so labels that arrive later can be joined.
    """
    fields: dict[str, Any] = {}
    if id_column is not None and id_column not in {c.name for c in columns}:
        fields[id_column] = (
            Annotated[int, Strict()] | Annotated[str, Strict(), Field(max_length=MAX_TEXT_LENGTH)] | None,
            Field(default=None, description="Row id, kept in the prediction log (optional)."),
        )
    for column in columns:
        annotation = _TYPES[column.type]
        if not column.required:
            annotation = annotation | None
        description = f"{column.type}{'' if column.required else ', may be null'}"
        fields[column.name] = (annotation, Field(..., description=description))
    return create_model(
        f"{_camel(model_name)}Row",
        __config__=ConfigDict(extra="forbid", frozen=True),
        **fields,
    )


def _label_type(classes: list[Any]) -> Any:
    kinds = {type(c) for c in classes}
    if kinds <= {bool}:
        return bool
    if kinds <= {int}:
        return int
    if kinds <= {int, float}:
        return float
    return str if kinds <= {str} else int | float | str | bool


def response_model(model_name: str, classes: list[Any], task: str = "binary") -> type[BaseModel]:
    """The documented answer of a task: labels with probabilities, or numbers with intervals."""
    label: Any = float if task == "regression" else _label_type(classes)
    fields: dict[str, Any] = {
        "request_id": (str, Field(description="Echoes the X-Request-ID header, or a new id.")),
        "model_name": (str, ...),
        "model_version": (str, Field(description="The registry version that answered.")),
        "predictions": (
            list[label],
            Field(
                description="One predicted value per row, in order."
                if task == "regression"
                else "One predicted class per row, in order."
            ),
        ),
    }
    if task == "binary":
        fields["probabilities"] = (
            list[float],
            Field(description="The positive class's probability per row; the label applies the tuned threshold."),
        )
    elif task == "multiclass":
        fields["probabilities"] = (
            list[dict[str, float]],
            Field(description="Every class's probability per row (the class as text -> probability)."),
        )
    else:
        fields["intervals"] = (
            list[list[float]] | None,
            Field(default=None, description="[lower, upper] per row: a split-conformal prediction interval."),
        )
        fields["interval_coverage"] = (
            float | None,
            Field(default=None, description="The share of new rows the intervals are built to cover."),
        )
    return create_model(f"{_camel(model_name)}Prediction", **fields)


def same_columns(a: tuple[Column, ...], b: tuple[Column, ...]) -> bool:
    """Whether a model with columns `b` can answer requests validated against `a`."""
    return {c.name: c.type for c in a} == {c.name: c.type for c in b} and all(
        not new.required or old.required for old, new in zip(sorted(a, key=_name), sorted(b, key=_name), strict=True)
    )


def _name(column: Column) -> str:
    return column.name
