"""The landing folder: complete files are moved once, without clobbering, and remembered across restarts."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import pytest

from components.data import landing
from components.data.extract import resolve_files
from components.data.landing import LandingError, LandingZone, announcement_id, is_candidate


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    incoming, source = tmp_path / "landing", tmp_path / "data"
    incoming.mkdir()
    source.mkdir()
    return incoming, source, tmp_path / "state" / "landing.json"


def _zone(folders: tuple[Path, Path, Path], settle: float = 5.0) -> LandingZone:
    zone = LandingZone(*folders, settle_seconds=settle)
    zone.prepare()
    return zone


def _drop(folder: Path, name: str, content: bytes = b"a,b\n1,2\n", age: float = 60.0) -> Path:
    """A file written `age` seconds ago."""
    path = folder / name
    path.write_bytes(content)
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return path


@pytest.mark.parametrize(
    ("name", "taken"),
    [
        ("batch_0004.parquet", True),
        ("new.csv", True),
        ("UPPER.PQ", True),
        (".hidden.csv", False),
        ("_marker.csv", False),
        ("upload.csv.tmp", False),
        ("upload.csv.partial", False),
        ("upload.parquet.part", False),
        ("notes.txt", False),
        ("no_suffix", False),
    ],
)
def test_only_finished_data_file_names_are_candidates(name: str, taken: bool) -> None:
    assert is_candidate(name) is taken


def test_a_new_file_is_moved_once_and_announced_once(folders) -> None:
    incoming, source, _ = folders
    zone = _zone(folders)
    _drop(incoming, "batch_0004.csv", b"x,y\n1,2\n")
    first = zone.poll()  # first sight: it may still be growing
    assert (first.moved, first.pending, first.waiting) == ([], [], ["batch_0004.csv"])
    second = zone.poll()
    assert [f.name for f in second.moved] == ["batch_0004.csv"]
    assert second.pending == second.moved
    assert (source / "batch_0004.csv").read_bytes() == b"x,y\n1,2\n"
    assert not (incoming / "batch_0004.csv").exists()
    zone.mark_announced(second.pending)
    for _ in range(3):
        later = zone.poll()
        assert (later.moved, later.pending) == ([], [])
    assert [(e.name, e.status) for e in zone.entries()] == [("batch_0004.csv", "announced")]


def test_a_growing_or_fresh_file_waits(folders) -> None:
    incoming, source, _ = folders
    zone = _zone(folders, settle=30.0)
    growing = _drop(incoming, "growing.csv", b"a\n1\n")
    zone.poll()
    with open(growing, "ab") as handle:  # still being written: size and mtime change
        handle.write(b"2\n")
    assert zone.poll().moved == []
    assert zone.poll().moved == []  # unchanged now, but modified less than 30 s ago
    assert zone.poll(now=time.time() + 31).moved[0].name == "growing.csv"
    assert (source / "growing.csv").read_bytes() == b"a\n1\n2\n"


def test_partial_hidden_empty_and_foreign_files_stay(folders) -> None:
    incoming, source, _ = folders
    zone = _zone(folders)
    names = [".upload.csv", "_SUCCESS.csv", "part.csv.tmp", "part.parquet.partial", "readme.txt"]
    for name in names:
        _drop(incoming, name)
    _drop(incoming, "empty.csv", b"")
    (incoming / "sub.csv").mkdir()  # a folder with a data-like name
    for _ in range(3):
        result = zone.poll()
        assert result.moved == []
    assert sorted(p.name for p in incoming.iterdir()) == sorted([*names, "empty.csv", "sub.csv"])
    assert list(source.iterdir()) == []


def test_a_name_already_in_the_source_is_never_overwritten(folders) -> None:
    incoming, source, _ = folders
    (source / "batch.csv").write_bytes(b"old\n")
    zone = _zone(folders)
    _drop(incoming, "batch.csv", b"new\n")
    zone.poll()
    (moved,) = zone.poll().moved
    target = Path(moved.target)
    assert target.parent == source and target.name.startswith("batch-landed-") and target.suffix == ".csv"
    assert target.read_bytes() == b"new\n"
    assert (source / "batch.csv").read_bytes() == b"old\n"


def test_state_survives_a_restart(folders) -> None:
    incoming, _, state = folders
    _drop(incoming, "a.csv")
    zone = _zone(folders)
    zone.poll()
    moved = zone.poll()
    assert len(moved.pending) == 1
    # The process dies before announcing: a new one announces the same files with the same id.
    restarted = _zone(folders).poll()
    assert restarted.moved == []
    assert restarted.pending == moved.pending
    assert restarted.announcement_id == moved.announcement_id
    _zone(folders).mark_announced(restarted.pending)
    assert _zone(folders).poll().pending == []
    assert json.loads(state.read_text())["files"][0]["status"] == "announced"
    assert not list(state.parent.glob(".*.tmp"))  # written under a temporary name, then renamed


class Crash(BaseException):
    """Stands for the process dying at a given point."""


def test_a_crash_after_the_link_is_finished_on_the_next_poll(folders, monkeypatch) -> None:
    incoming, source, _ = folders
    _drop(incoming, "a.csv", b"payload\n")
    zone = _zone(folders)
    zone.poll()

    def link_then_die(self: LandingZone, entry: landing.Landed) -> None:
        landing._publish(self.folder / entry.name, Path(entry.target))
        raise Crash

    monkeypatch.setattr(LandingZone, "_move", link_then_die)
    with pytest.raises(Crash):
        zone.poll()
    monkeypatch.undo()
    assert (incoming / "a.csv").exists() and (source / "a.csv").exists()  # both names, one file
    result = _zone(folders).poll()
    assert [f.name for f in result.pending] == ["a.csv"]
    assert "finished moving" in result.notes[0]
    assert not (incoming / "a.csv").exists()
    assert (source / "a.csv").read_bytes() == b"payload\n"


def test_a_crash_before_the_move_is_redone_on_the_next_poll(folders, monkeypatch) -> None:
    incoming, source, _ = folders
    _drop(incoming, "a.csv", b"payload\n")
    zone = _zone(folders)
    zone.poll()

    def die(self: LandingZone, entry: landing.Landed) -> None:
        raise Crash

    monkeypatch.setattr(LandingZone, "_move", die)
    with pytest.raises(Crash):
        zone.poll()
    monkeypatch.undo()
    assert [e.status for e in zone.entries()] == ["moving"]
    result = _zone(folders).poll()
    assert [f.name for f in result.pending] == ["a.csv"] and "redid" in result.notes[0]
    assert (source / "a.csv").read_bytes() == b"payload\n" and not (incoming / "a.csv").exists()


def test_across_file_systems_the_copy_is_published_by_a_rename(folders, monkeypatch) -> None:
    incoming, source, _ = folders
    _drop(incoming, "big.parquet", b"PAR1" * 1000)
    zone = _zone(folders)
    zone.poll()
    copies: list[Path] = []
    real_copy = landing._copy_from

    def no_links(src: Path, dst: Path, **_: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    def watched_copy(fd: int, target: Path) -> None:
        assert not (source / "big.parquet").exists()  # nothing under the final name while copying
        copies.append(target.with_name(f".{target.name}.landing"))
        real_copy(fd, target)

    monkeypatch.setattr(landing.os, "link", no_links)
    monkeypatch.setattr(landing, "_copy_from", watched_copy)
    (moved,) = zone.poll().moved
    assert copies and copies[0].name.startswith(".")  # extraction skips dot-names
    assert Path(moved.target).read_bytes() == b"PAR1" * 1000
    assert sorted(p.name for p in source.iterdir()) == ["big.parquet"]
    assert [p.name for p in resolve_files(str(source))] == ["big.parquet"]
    assert not (incoming / "big.parquet").exists()


def test_announcement_ids_depend_on_the_files_not_their_order(folders) -> None:
    incoming, _, _ = folders
    for name in ("a.csv", "b.csv"):
        _drop(incoming, name)
    zone = _zone(folders)
    zone.poll()
    files = zone.poll().pending
    assert announcement_id(files) == announcement_id(list(reversed(files)))
    assert announcement_id(files[:1]) != announcement_id(files)


def test_unusable_folders_are_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(LandingError, match="source folder itself"):
        LandingZone(data, data, tmp_path / "s.json").check()
    a_file = tmp_path / "data.csv"
    a_file.write_text("a\n1\n")
    with pytest.raises(LandingError, match="must be a folder"):
        LandingZone(tmp_path / "in", a_file, tmp_path / "s.json").check()


def test_a_link_dropped_in_the_landing_folder_is_never_taken(folders, tmp_path: Path) -> None:
    """A symbolic link to a file elsewhere, or a file swapped for one after it settled."""
    incoming, source, _ = folders
    outside = tmp_path / "secret.csv"
    outside.write_bytes(b"password,x\nhunter2,1\n")
    (incoming / "linked.csv").symlink_to(outside)
    swapped = _drop(incoming, "swapped.csv")
    zone = _zone(folders)
    zone.poll()
    swapped.unlink()
    swapped.symlink_to(outside)  # same name, now a link: what settled is gone
    result = zone.poll()
    assert result.moved == [] and list(source.iterdir()) == []
    assert outside.read_bytes().startswith(b"password")
    for _ in range(2):
        assert zone.poll().moved == []
    assert list(source.iterdir()) == []


def test_a_file_replaced_after_it_settled_is_not_published(folders) -> None:
    incoming, source, _ = folders
    first = _drop(incoming, "batch.csv", b"a,b\n1,2\n")
    settled = first.stat().st_ino
    with pytest.raises(landing.NotARegularFile):
        landing._publish(first, source / "batch.csv", settled + 1)
    assert not (source / "batch.csv").exists()
    landing._publish(first, source / "batch.csv", settled)
    assert (source / "batch.csv").read_bytes() == b"a,b\n1,2\n"
