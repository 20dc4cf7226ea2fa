"""Small file-system helpers shared by the components."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def write_text_atomic(path: Path, text: str, *, durable: bool = False) -> Path:
    """Write `text` under a unique dot-name beside `path`, then rename it into place.

    Readers see the old file or the new one, never half of one, and concurrent writers never
    share a temporary file. `durable` also syncs the file and its folder to disk before returning
    (state that must survive a power cut, not only a crash of this process).
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
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    return path
