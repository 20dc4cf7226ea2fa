"""The landing folder: data files dropped there are moved into the training source once complete.

A file is taken when it is complete: a CSV or Parquet name (not a dot-, `_`-, `.tmp`- or
`.partial`-style name), not empty, and with the same size, modification time and inode on two
consecutive polls, last modified at least `settle_seconds` ago. It is then moved into the
source folder without ever overwriting a file there (a hard link, then the landing name is
removed; a copy under a dot-name, then a rename, across file systems).

Every step is recorded in a small JSON state file (written to a temporary name and renamed)
before and after it happens, so a crash at any point is finished on the next poll and no file
is moved twice or lost: `moving` (the target is chosen), `moved` (the file is in the source
folder, training not yet asked for), `announced` (the caller reported it, e.g. as an event).

No Prefect here: the deploy process polls a `LandingZone` and announces what it returns.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import filecmp
import json
import os
import stat
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from components.core.files import fsync_dir, write_text_atomic
from components.data.extract import TABULAR_SUFFIXES

# Names uploaders and download tools give to files still being written.
PARTIAL_SUFFIXES = (".tmp", ".partial", ".part", ".crdownload", ".download", ".filepart", ".uploading")
STATE_VERSION = 1
HISTORY_LIMIT = 500  # announced files kept in the state for the record
# Stable namespace: the same landed files always give the same announcement id.
ANNOUNCEMENT_NAMESPACE = uuid.UUID("8a4e1f0c-5b7d-4c1e-9f3a-2d6b0e7c9a15")
# Hard links unsupported or across file systems: fall back to copy + rename.
_NO_LINK = {errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS}

Status = Literal["moving", "moved", "announced"]


class LandingError(RuntimeError):
    """The landing folder cannot be used as configured."""


@dataclass(frozen=True)
class Observation:
    """A file of the landing folder as one poll saw it."""

    name: str
    size: int
    mtime_ns: int
    inode: int


@dataclass(frozen=True)
class Landed:
    """A landed file and how far its move got."""

    name: str  # its name in the landing folder
    target: str  # its path in the source folder
    size: int
    mtime_ns: int
    status: Status
    landed_at: str
    announced_at: str | None = None
    inode: int | None = None  # the file seen settling (older states lack it)


@dataclass(frozen=True)
class PollResult:
    """What one poll did: files moved now, files waiting to be announced (these and earlier ones),
    files left in place, and anything recovered or given up after a crash."""

    moved: list[Landed] = field(default_factory=list)
    pending: list[Landed] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def announcement_id(self) -> str:
        return announcement_id(self.pending)


def is_candidate(name: str) -> bool:
    """A name that may be a finished data file: CSV or Parquet, not hidden, not a partial upload."""
    lower = name.lower()
    if name.startswith((".", "_")) or lower.endswith(PARTIAL_SUFFIXES):
        return False
    return Path(lower).suffix in TABULAR_SUFFIXES


def observe(folder: Path) -> dict[str, Observation]:
    """The candidate files directly in `folder` (not in subfolders), by name."""
    seen: dict[str, Observation] = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            if not is_candidate(entry.name):
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                stat = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # removed between listing and stat
                continue
            seen[entry.name] = Observation(entry.name, stat.st_size, stat.st_mtime_ns, stat.st_ino)
    return seen


def ready_files(
    previous: Mapping[str, Observation], current: Mapping[str, Observation], now: float, settle_seconds: float
) -> list[Observation]:
    """Files unchanged since the previous poll, not empty, and quiet for `settle_seconds`, in name order."""
    return [
        obs
        for name, obs in sorted(current.items())
        if previous.get(name) == obs and obs.size > 0 and now - obs.mtime_ns / 1e9 >= settle_seconds
    ]


def announcement_id(files: Sequence[Landed]) -> str:
    """The same files always give the same id, so a repeated announcement can be recognised."""
    key = "\n".join(sorted(f"{f.target}:{f.size}:{f.mtime_ns}" for f in files))
    return str(uuid.uuid5(ANNOUNCEMENT_NAMESPACE, key))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _same_content(source: Path, target: Path, size: int) -> bool:
    """Whether `target` is the landed file: the same inode or bytes as `source`, or its size once
    `source` is gone."""
    if target.stat().st_size != size:
        return False
    if not source.exists():
        return True
    return os.path.samefile(source, target) or filecmp.cmp(source, target, shallow=False)


class NotARegularFile(OSError):
    """A landed name that is a link, or not the file that was seen settling."""


def _open_landed(source: Path, inode: int | None) -> int:
    """`source` opened without following a symbolic link, checked to be the regular file seen."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotARegularFile(errno.ELOOP, "a symbolic link: not taken", str(source)) from exc
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or (inode is not None and info.st_ino != inode):
        os.close(fd)
        raise NotARegularFile(errno.EINVAL, "not the regular file seen settling: not taken", str(source))
    return fd


def _publish(source: Path, target: Path, inode: int | None = None) -> None:
    """Make `source`'s content appear at `target` in one step, never replacing an existing file.

    `source` is opened without following links and must be the file (`inode`) seen settling; the
    published name is checked to be that same file, so a link or a swap dropped into the landing
    folder never makes training read a file from elsewhere.
    """
    fd = _open_landed(source, inode)
    try:
        seen = os.fstat(fd).st_ino
        try:
            os.link(source, target, follow_symlinks=False)  # atomic, and fails when the target exists
        except OSError as exc:
            if exc.errno not in _NO_LINK:
                raise
        else:
            if os.stat(target, follow_symlinks=False).st_ino != seen:  # swapped between open and link
                target.unlink()
                raise NotARegularFile(errno.EINVAL, "changed while being moved: not taken", str(source))
            return
        _copy_from(fd, target)
    finally:
        os.close(fd)


def _copy_from(fd: int, target: Path) -> None:
    """Across file systems: the opened file's bytes under a dot-name, then renamed into place."""
    staged = target.with_name(f".{target.name}.landing")  # a dot-name: extraction skips it
    with open(staged, "wb") as handle:
        os.lseek(fd, 0, os.SEEK_SET)
        while chunk := os.read(fd, 1 << 20):
            handle.write(chunk)
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.link(staged, target)
    except OSError as exc:
        if exc.errno not in _NO_LINK:
            raise
        if target.exists():
            raise FileExistsError(errno.EEXIST, "target exists", str(target)) from exc
        os.replace(staged, target)
    else:
        staged.unlink()


class LandingZone:
    """Moves complete files from `folder` into `destination` and remembers each one in `state_path`."""

    def __init__(self, folder: Path, destination: Path, state_path: Path, settle_seconds: float = 1.0):
        self.folder = folder
        self.destination = destination
        self.state_path = state_path
        self.settle_seconds = settle_seconds
        self._seen: dict[str, Observation] = {}

    def check(self) -> None:
        """Refuse a configuration that would lose or loop data."""
        if self.destination.exists() and not self.destination.is_dir():
            raise LandingError(f"landed files go into the training source, which must be a folder: {self.destination}")
        if self.folder.resolve() == self.destination.resolve():
            raise LandingError(f"the landing folder is the training source folder itself: {self.folder}")
        if self.folder.exists() and not self.folder.is_dir():
            raise LandingError(f"the landing folder is a file: {self.folder}")

    def prepare(self) -> None:
        """Create the landing folder, the destination and the state's folder."""
        self.check()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.destination.mkdir(parents=True, exist_ok=True)
        self.state_path.parent.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ state

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One poller at a time per state file, across processes."""
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.state_path.with_name(self.state_path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def entries(self) -> list[Landed]:
        """Every file the state remembers, oldest first."""
        try:
            data = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return []
        except ValueError as exc:
            raise LandingError(
                f"unreadable landing state {self.state_path}: {exc}; move it aside to start over"
            ) from exc
        return [Landed(**entry) for entry in data.get("files", [])]

    def _save(self, entries: list[Landed]) -> None:
        announced = [e for e in entries if e.status == "announced"]
        drop = {id(e) for e in announced[: max(0, len(announced) - HISTORY_LIMIT)]}
        kept = [e for e in entries if id(e) not in drop]
        payload = {
            "version": STATE_VERSION,
            "folder": str(self.folder),
            "destination": str(self.destination),
            "files": [asdict(e) for e in kept],
        }
        write_text_atomic(self.state_path, json.dumps(payload, indent=1), durable=True)

    # ------------------------------------------------------------------ moves

    def _plan_target(self, name: str, taken: set[str]) -> Path:
        """`name` in the destination, or a time-stamped variant when that name is taken."""
        target = self.destination / name
        stem, suffix = Path(name).stem, Path(name).suffix
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        count = 0
        while target.exists() or str(target) in taken:
            count += 1
            target = self.destination / f"{stem}-landed-{stamp}{f'-{count}' if count > 1 else ''}{suffix}"
        return target

    def _move(self, entry: Landed) -> None:
        source, target = self.folder / entry.name, Path(entry.target)
        _publish(source, target, entry.inode)
        fsync_dir(target.parent)
        source.unlink()
        fsync_dir(self.folder)

    def _recover(self, entries: list[Landed], notes: list[str]) -> list[Landed]:
        """Finish moves a crash interrupted (state `moving`)."""
        recovered: list[Landed] = []
        for entry in entries:
            if entry.status != "moving":
                recovered.append(entry)
                continue
            source, target = self.folder / entry.name, Path(entry.target)
            if target.exists() and _same_content(source, target, entry.size):
                source.unlink(missing_ok=True)  # published before the crash; only the landing name is left
                recovered.append(replace(entry, status="moved"))
                notes.append(f"finished moving {entry.name} -> {target} after an interruption")
            elif not target.exists() and source.exists() and source.stat().st_size == entry.size:
                self._move(entry)
                recovered.append(replace(entry, status="moved"))
                notes.append(f"redid the interrupted move of {entry.name} -> {target}")
            else:
                # The file changed or went away, or another file took the target name: forget the
                # plan; detection sees the file again (if it is still there) and plans a new move.
                notes.append(f"dropped an interrupted move of {entry.name}: the file or its target changed")
        return recovered

    def poll(self, now: float | None = None) -> PollResult:
        """Move every complete file; return what moved and what still needs announcing."""
        with self._locked():
            notes: list[str] = []
            entries = self.entries()
            if any(e.status == "moving" for e in entries):
                entries = self._recover(entries, notes)
                self._save(entries)
            current = observe(self.folder)
            ready = ready_files(self._seen, current, time.time() if now is None else now, self.settle_seconds)
            moved: list[Landed] = []
            taken = {e.target for e in entries if e.status != "announced"}
            for obs in ready:
                target = self._plan_target(obs.name, taken)
                taken.add(str(target))
                entry = Landed(obs.name, str(target), obs.size, obs.mtime_ns, "moving", _now(), inode=obs.inode)
                entries.append(entry)
                self._save(entries)  # the plan is durable before anything moves
                try:
                    self._move(entry)
                except (FileNotFoundError, FileExistsError, NotARegularFile) as exc:  # a race, or a swap
                    entries.remove(entry)
                    self._save(entries)
                    if isinstance(exc, NotARegularFile):
                        notes.append(f"{obs.name}: {exc.strerror}")
                    else:
                        gone = isinstance(exc, FileNotFoundError)
                        notes.append(f"{obs.name}: {'disappeared' if gone else 'its target appeared'} before the move")
                    continue
                done = replace(entry, status="moved")
                entries[entries.index(entry)] = done
                self._save(entries)
                moved.append(done)
            self._seen = {name: obs for name, obs in current.items() if obs not in ready}
            pending = [e for e in entries if e.status == "moved"]
            return PollResult(moved=moved, pending=pending, waiting=sorted(self._seen), notes=notes)

    def mark_announced(self, files: Sequence[Landed]) -> None:
        """Record that training was asked for these files; they are never announced again."""
        targets = {f.target for f in files}
        with self._locked():
            stamp = _now()
            entries = [
                replace(e, status="announced", announced_at=stamp) if e.status == "moved" and e.target in targets else e
                for e in self.entries()
            ]
            self._save(entries)
