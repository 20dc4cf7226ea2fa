"""The README and the documentation site: links land on real files, the generated references cover
the code, and the README stays the short front door. (`make docs` builds the site strictly.)"""

from __future__ import annotations

import importlib.util
import re
import sys
import types
import typing
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import BaseModel

from components.core.config import PipelineConfig

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
PAGES = sorted(DOCS.rglob("*.md"))
MAX_README_LINES = 220

FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
# Paths in code spans that name code in the repository (templates such as <name> are skipped).
REPO_PATH = re.compile(r"^(components|flows|serving|benchmarks|tests|docs|\.github)/[\w./-]*$")


def _load_hook(name: str) -> ModuleType:
    path = DOCS / "hooks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"docs_hooks_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _prose(text: str) -> str:
    """Markdown without fenced code blocks and code spans, where `[x](y)` is not a link."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def _relative_links(path: Path) -> list[str]:
    links = LINK.findall(_prose(path.read_text(encoding="utf-8")))
    return [link for link in links if not re.match(r"^[a-z][a-z0-9+.-]*:", link) and not link.startswith("#")]


def _code_spans(path: Path) -> list[str]:
    return [span.strip() for _, span in CODE_SPAN.findall(FENCE.sub("", path.read_text(encoding="utf-8")))]


def test_the_site_has_pages_and_the_readme_links_to_them() -> None:
    assert (DOCS / "index.md").is_file() and len(PAGES) > 10
    linked = {(README.parent / link.split("#")[0]).resolve() for link in _relative_links(README)}
    assert (DOCS / "index.md").resolve() in linked


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_land_on_files(page: Path) -> None:
    missing = []
    for link in _relative_links(page):
        target = (page.parent / link.split("#")[0]).resolve()
        if not target.exists():
            missing.append(link)
    assert not missing, f"{page.relative_to(ROOT)} links to files that do not exist: {missing}"


def test_readme_links_name_pages_not_anchors() -> None:
    # GitHub and MkDocs make anchors differently: the README links to whole pages.
    anchored = [link for link in _relative_links(README) if "#" in link]
    assert not anchored, f"README links to anchors: {anchored}"


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_repository_paths_in_code_spans_exist(page: Path) -> None:
    stale = [
        span
        for span in _code_spans(page)
        if REPO_PATH.match(span) and not (ROOT / span).exists() and not any(c in span for c in "<>{}*")
    ]
    assert not stale, f"{page.relative_to(ROOT)} names paths that do not exist: {stale}"


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move detail into docs/"


def _section_model(annotation: object) -> type[BaseModel] | None:
    candidates = [annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        candidates += list(typing.get_args(annotation))
    return next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)


def _settings(model: type[BaseModel], path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every leaf setting's dotted path, walking nested sections through `model_fields`."""
    found = []
    for name, field in model.model_fields.items():
        section = _section_model(field.annotation)
        if section is not None:
            found += _settings(section, (*path, name))
        else:
            found.append((*path, name))
    return found


def test_config_reference_covers_every_setting() -> None:
    hook = _load_hook("config_reference")
    rendered = hook.render_reference(PipelineConfig)
    settings = _settings(PipelineConfig)
    assert len(settings) > 50
    for path in settings:
        variable = "MLOPS_HOME" if path == ("home",) else "MLOPS__" + "__".join(p.upper() for p in path)
        assert f"`{variable}`" in rendered, f"{'.'.join(path)} is missing from the configuration reference"
    for name, field in PipelineConfig.model_fields.items():
        if _section_model(field.annotation) is not None:
            assert f"## `{name}`" in rendered
    assert hook.PLACEHOLDER in (DOCS / "configuration.md").read_text(encoding="utf-8")


def test_config_reference_shows_nested_defaults_and_descriptions() -> None:
    rendered = _load_hook("config_reference").render_reference(PipelineConfig)
    default = PipelineConfig.model_fields["deploy"].default.training.cron
    assert f"`{default}`" in rendered  # a nested section's own default, not its class's
    description = PipelineConfig.model_fields["home"].description
    assert description and description in rendered


def test_layout_lists_every_module() -> None:
    hook = _load_hook("layout")
    rendered = hook.render_layout(ROOT)
    for module in (ROOT / top for top in ("components", "flows", "serving")):
        for path in module.rglob("*.py"):
            if path.name != "__init__.py" and "__pycache__" not in path.parts:
                heading = f"### `{path.parent.relative_to(ROOT).as_posix()}/`"
                assert heading in rendered and f"| `{path.name}` |" in rendered, path
    assert hook.PLACEHOLDER in (DOCS / "architecture.md").read_text(encoding="utf-8")


def test_every_command_is_documented() -> None:
    import typer.main

    from flows.cli import app

    cli_page = (DOCS / "cli.md").read_text(encoding="utf-8")
    readme = README.read_text(encoding="utf-8")
    for name, command in typer.main.get_command(app).commands.items():
        assert f"`mlops {name}" in cli_page, f"mlops {name} is missing from docs/cli.md"
        assert f"`mlops {name}" in readme, f"mlops {name} is missing from the README's command table"
        for sub in getattr(command, "commands", {}):
            assert re.search(rf"`mlops {name} [^`]*\b{sub}\b", cli_page), f"mlops {name} {sub} is missing"
