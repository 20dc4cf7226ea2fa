"""Small file-system helpers shared by the components."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def staged(path: Path, *, durable: bool = True) -> Iterator[Path]:
    """The one way files are written here: a unique dot-name beside `path` to write to, renamed
    into place when the block ends without an error, removed when it does not.

    Readers see the old file or the new one, never half of one, and concurrent writers never
    share a staging file. `durable` (the default) also syncs the file before the rename and the
    folder after it: a crash of the machine leaves the old file or the whole new one, never a
    truncated one under the final name.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial")
    try:
        yield staging
        if durable:
            replace_durably(staging, path)
        else:
            os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str, *, durable: bool = True) -> Path:
    """`text` written to `path` through `staged`."""
    with staged(path, durable=durable) as staging:
        staging.write_text(text)
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
