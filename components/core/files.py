"""Small file-system helpers shared by the components."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def write_text_atomic(path: Path, text: str, *, durable: bool = True) -> Path:
    """Write `text` under a unique dot-name beside `path`, then rename it into place.

    Readers see the old file or the new one, never half of one, and concurrent writers never
    share a temporary file. `durable` (the default) also syncs the file before the rename and the
    folder after it: a crash of the machine leaves the old file or the whole new one, never a
    truncated one under the final name.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial")
    try:
        with open(staged, "w") as handle:
            handle.write(text)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(staged, path)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)
    return path


def fsync_dir(folder: Path) -> None:
    """Sync a folder's entries (a rename, a link, a removal in it) to disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(written: Path, final: Path) -> None:
    """Rename a finished file into place after its bytes, and then the rename, reach the disk: a
    crash leaves the old state or the whole new file, never a truncated one under the final name."""
    fd = os.open(written, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    written.replace(final)
    fsync_dir(final.parent)
