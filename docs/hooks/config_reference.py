"""MkDocs hook: the configuration reference, generated from the pydantic fields of `PipelineConfig`.

`docs/configuration.md` holds the placeholder below; every build replaces it with one table per
section (key, type, default, environment variable, description), walking `model_fields`, so the
page cannot fall behind the code. `render_reference` is a plain function the tests call.
"""

import enum
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

PLACEHOLDER = "<!-- config-reference -->"
ENV_PREFIX = "MLOPS__"
HOME_VARIABLE = "MLOPS_HOME"


@dataclass(frozen=True)
class Row:
    """One setting: where it is, what it holds, its default, its variable and what it does."""

    path: tuple[str, ...]
    type: str
    default: str
    variable: str
    description: str


@dataclass(frozen=True)
class Section:
    """One model of the configuration: its dotted path, its docstring and its own settings."""

    path: tuple[str, ...]
    doc: str
    rows: tuple[Row, ...]


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel a field holds (also inside `X | None`), else None."""
    candidates = [annotation, *typing.get_args(annotation)] if _is_union(annotation) else [annotation]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _type_name(annotation: Any) -> str:
    """A reader's name for a type, without `|` (it would split a Markdown table cell)."""
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " or ".join(f'"{arg}"' if isinstance(arg, str) else _format_value(arg) for arg in args)
    if _is_union(annotation):
        return " or ".join(dict.fromkeys(_type_name(arg) for arg in args))
    if origin in (tuple, list, set, frozenset) or annotation in (tuple, list):
        items = [arg for arg in args if arg is not Ellipsis]
        return f"list of {_type_name(items[0])}" if items else "list"
    if origin is dict or annotation is dict:
        return f"mapping of {_type_name(args[0])} to {_type_name(args[1])}" if args else "mapping"
    if isinstance(annotation, type):
        if issubclass(annotation, PurePath):
            return "path"
        if issubclass(annotation, enum.Enum):
            return " or ".join(f'"{member.value}"' for member in annotation)
        return {"str": "text", "bool": "boolean", "int": "integer", "float": "number"}.get(
            annotation.__name__, annotation.__name__
        )
    return str(annotation).replace("typing.", "")


def _bounds(field: FieldInfo) -> str:
    """The numeric constraints pydantic enforces on a field, e.g. `≥ 0, ≤ 1`."""
    parts = []
    for constraint in field.metadata:
        for attribute, symbol in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            value = getattr(constraint, attribute, None)
            if value is not None:
                parts.append(f"{symbol} {_format_value(value)}")
    return ", ".join(parts)


def _format_value(value: Any) -> str:
    """A default as it would be written in mlops.yaml."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return _format_value(value.value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, str):
        return f'"{value}"' if value == "" or value.strip() != value else value
    if isinstance(value, (tuple, list, set, frozenset)):
        return "[" + ", ".join(_format_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_format_value(item)}" for key, item in value.items()) + "}"
    if isinstance(value, BaseModel):
        return "{" + ", ".join(f"{k}: {_format_value(v)}" for k, v in value.model_dump().items()) + "}"
    return repr(value)


def _field_default(field: FieldInfo) -> Any:
    """The field's default from the class alone (never from the environment)."""
    if field.default_factory is not None:
        try:
            return field.get_default(call_default_factory=True)
        except TypeError:  # a factory that needs the validated data: no single default to show
            return None
    return field.get_default()


def _variable(path: tuple[str, ...]) -> str:
    if path == ("home",):
        return HOME_VARIABLE
    return ENV_PREFIX + "__".join(part.upper() for part in path)


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


def iter_sections(root: type[BaseModel]) -> Iterator[Section]:
    """Every model of the configuration, the root first, each with the settings it holds itself.

    Defaults come from the parent's default instance, so a nested model's own default (such as
    `deploy.training.cron`) shows the value the pipeline really starts from.
    """
    yield from _walk(root, None, ())


def _walk(model: type[BaseModel], instance: BaseModel | None, path: tuple[str, ...]) -> Iterator[Section]:
    rows: list[Row] = []
    nested: list[tuple[type[BaseModel], BaseModel | None, tuple[str, ...]]] = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        default = getattr(instance, name) if instance is not None else _field_default(field)
        section = _section_model(field.annotation)
        if section is not None and (default is None or isinstance(default, BaseModel)):
            child = default if isinstance(default, BaseModel) else None
            nested.append((type(child) if child is not None else section, child, (*path, key)))
            continue
        type_name = _type_name(field.annotation)
        bounds = _bounds(field)
        rows.append(
            Row(
                path=(*path, key),
                type=f"{type_name} ({bounds})" if bounds else type_name,
                default=_format_value(default),
                variable=_variable((*path, key)),
                description=_one_line(field.description),
            )
        )
    yield Section(path=path, doc=_one_line(model.__doc__), rows=tuple(rows))
    for child_model, child, child_path in nested:
        yield from _walk(child_model, child, child_path)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _code(text: str) -> str:
    if not text:
        return ""
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def render_reference(root: type[BaseModel]) -> str:
    """Markdown tables for every setting of `root`, one heading per section."""
    blocks = []
    for section in iter_sections(root):
        heading = "Top level" if not section.path else f"`{'.'.join(section.path)}`"
        level = "##" if len(section.path) <= 1 else "###"
        lines = [f"{level} {heading}", ""]
        if section.doc and section.path:
            lines += [section.doc, ""]
        if not section.rows:
            blocks.append("\n".join(lines))
            continue
        lines += [
            "| key | type | default | environment variable | description |",
            "| --- | --- | --- | --- | --- |",
        ]
        for row in section.rows:
            cells = (
                _code(row.path[-1]),
                row.type,
                _code(row.default),
                _code(row.variable),
                row.description or "–",
            )
            lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """MkDocs event: fill the configuration page's placeholder."""
    if PLACEHOLDER not in markdown:
        return markdown
    from components.core.config import PipelineConfig

    return markdown.replace(PLACEHOLDER, render_reference(PipelineConfig))
