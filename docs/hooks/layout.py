"""MkDocs hook: the architecture page's module tables, generated from the source tree.

Each Python package under `components/`, `flows/` and `serving/` gets a table of its modules with
the first paragraph of each module's docstring (read with `ast`, nothing is imported), so the page
follows the code as modules are split or moved. `render_layout` is a plain function the tests call.
"""

import ast
from pathlib import Path
from typing import Any

PLACEHOLDER = "<!-- module-layout -->"
PACKAGES = ("components", "flows", "serving")


def summary(path: Path) -> str:
    """The first paragraph of a module's docstring, on one line ('' when it has none)."""
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return " ".join(docstring.split("\n\n")[0].split())


def _packages(root: Path) -> list[Path]:
    """Every folder holding Python modules under the top-level packages, in path order."""
    found: set[Path] = set()
    for top in PACKAGES:
        base = root / top
        if base.is_dir():
            found.update(p.parent for p in base.rglob("*.py") if "__pycache__" not in p.parts)
    return sorted(found)


def render_layout(root: Path) -> str:
    """Markdown: one heading and table per package, its modules in name order."""
    blocks = []
    for package in _packages(root):
        name = package.relative_to(root).as_posix()
        init = package / "__init__.py"
        lines = [f"### `{name}/`", ""]
        intro = summary(init) if init.is_file() else ""
        if intro:
            lines += [intro, ""]
        modules = sorted(p for p in package.glob("*.py") if p.name != "__init__.py")
        if not intro and not modules:
            continue
        if modules:
            lines += ["| module | what it holds |", "| --- | --- |"]
            for module in modules:
                what = summary(module).replace("|", "\\|") or "–"
                lines.append(f"| `{module.name}` | {what} |")
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """MkDocs event: fill the architecture page's placeholder from the repository's tree."""
    if PLACEHOLDER not in markdown:
        return markdown
    root = Path(config["config_file_path"]).parent
    return markdown.replace(PLACEHOLDER, render_layout(root))
