"""Registered versions and their aliases: registering, promoting, rolling back, tagging, and the
`challenger` a rollout (shadow or canary) tries against the champion before it may replace it."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from components.core.faults import fault_point
from components.tracking.registry import history
from components.tracking.registry.connection import RegistryError

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

CHAMPION = "champion"
PREVIOUS_CHAMPION = "previous-champion"
CHALLENGER = "challenger"
RECHECK_OF = "recheck_of"  # tag of an outgoing champion kept in shadow to re-check a promotion on labels


@dataclass(frozen=True)
class ChampionInfo:
    """The model version the `champion` alias points at."""

    name: str
    version: str
    run_id: str | None
    source: str
    tags: dict[str, str]
    promoted_at: str | None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@{CHAMPION}"


def register_model(model_uri: str, name: str, tags: dict[str, str] | None = None) -> str:
    """Create a new version of `name` from a logged model; returns the version number."""
    import mlflow

    version = mlflow.register_model(model_uri, name, tags=tags)
    return str(version.version)


def _champion_version(client: MlflowClient, name: str) -> ModelVersion | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def get_champion(client: MlflowClient, name: str) -> ChampionInfo | None:
    version = _champion_version(client, name)
    if version is None:
        return None
    return ChampionInfo(
        name=name,
        version=str(version.version),
        run_id=version.run_id,
        source=str(version.source),
        tags=dict(version.tags or {}),
        promoted_at=(version.tags or {}).get("promoted_at"),
    )


def _alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


@dataclass(frozen=True)
class Audit:
    """Who moves an alias, why, through what, and on what evidence (for the model's trail)."""

    reason: str
    via: str
    evidence: str | None = None
    by: str = ""
    action: str = "promoted"  # what set_champion records: promoted, or approved

    def move(
        self,
        action: str,
        version: str | None,
        champion: str | None,
        previous: str | None,
        challenger: str | None = None,
    ) -> history.Move:
        by = self.by or history.actor()
        return history.Move(
            action, version, champion, previous, by, self.reason, self.via, self.evidence, challenger=challenger
        )


def check_trail(client: MlflowClient, name: str, lock_dir: Path | None = None) -> history.Move | None:
    """Reconcile the trail with the aliases (under the alias lock); the `outside_move` or
    `first_seen` move it had to record, if any."""
    with alias_lock(lock_dir):
        return _reconcile(client, name)


def _reconcile(client: MlflowClient, name: str) -> history.Move | None:
    champion, previous, challenger = _aliases(client, name)
    return history.reconcile(client, name, champion, previous, challenger=challenger)


def _aliases(client: MlflowClient, name: str) -> tuple[str | None, str | None, str | None]:
    """Where champion, previous-champion and challenger point now."""
    return tuple(_alias_version(client, name, a) for a in (CHAMPION, PREVIOUS_CHAMPION, CHALLENGER))  # type: ignore[return-value]


def note_move(
    client: MlflowClient, name: str, action: str, version: str, audit: Audit, lock_dir: Path | None = None
) -> history.Move:
    """Record an act that leaves the aliases where they are (a candidate ready, a rejection)."""
    with alias_lock(lock_dir):
        _reconcile(client, name)
        return history.record(client, name, audit.move(action, version, *_aliases(client, name)))


class ChampionMoved(RegistryError):
    """Another run moved `champion` after this candidate was compared with the one before."""


_UNCHECKED = object()


@contextlib.contextmanager
def alias_lock(lock_dir: Path | None) -> Iterator[None]:
    """Serialize alias changes among processes sharing a workspace (an advisory file lock)."""
    if lock_dir is None:
        yield
        return
    lock_dir.mkdir(parents=True, exist_ok=True)
    with (lock_dir / "registry-alias.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def set_champion(
    client: MlflowClient,
    name: str,
    version: str,
    tags: dict[str, str],
    *,
    expected: str | object | None = _UNCHECKED,
    lock_dir: Path | None = None,
    audit: Audit | None = None,
) -> str | None:
    """Tag the version with why it was promoted, keep the outgoing champion as `previous-champion`,
    then move `champion` in one registry call. Returns the outgoing champion's version.

    `expected` is the champion the candidate was compared with (None: there was none). If the alias
    moved since, nothing changes and `ChampionMoved` is raised: two runs racing to promote never
    replace a champion neither was compared with. Processes sharing `lock_dir` (the workspace) are
    serialized; against a remote registry the check and a read-back after the move narrow the race
    to the server's round trips, and the alias, like any MLflow alias, names one version only.
    The move is appended to the model's trail (`history`) with `audit`'s who and why.
    """
    with alias_lock(lock_dir):
        _reconcile(client, name)
        outgoing = _alias_version(client, name, CHAMPION)
        if expected is not _UNCHECKED and outgoing != expected:
            raise ChampionMoved(
                f"{name}: champion is now v{outgoing}, not "
                f"{'absent' if expected is None else f'v{expected}'} as when v{version} was evaluated; "
                "not promoted (a new run will compare against the current champion)"
            )
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, str(value)[:5000])
        if outgoing is not None and outgoing != version:
            client.set_registered_model_alias(name, PREVIOUS_CHAMPION, outgoing)
        fault_point("alias")  # between the two alias moves
        client.set_registered_model_alias(name, CHAMPION, version)
        now = _alias_version(client, name, CHAMPION)
        if now != version:
            raise ChampionMoved(f"{name}: another run moved champion to v{now} while v{version} was being promoted")
        if _alias_version(client, name, CHALLENGER) == version:  # a challenger promoted: its trial is over
            client.delete_registered_model_alias(name, CHALLENGER)
        audit = audit or Audit("promoted", "set_champion")
        history.record(client, name, audit.move(audit.action, version, *_aliases(client, name)))
    return outgoing


@dataclass(frozen=True)
class Rollback:
    name: str
    restored: str
    demoted: str
    reason: str
    at: str


def rollback(
    client: MlflowClient,
    name: str,
    reason: str,
    *,
    expected: str | None = None,
    lock_dir: Path | None = None,
    via: str = "mlops rollback",
) -> Rollback:
    """Point `champion` back at `previous-champion` in one call; the demoted version becomes the
    new `previous-champion` (so a second rollback undoes the first). Both versions are tagged.

    Under the same lock as promotion (`alias_lock`), so a promotion and a rollback never interleave;
    with `expected`, only while the champion is still that version (`ChampionMoved` otherwise: a
    champion promoted since the caller looked is never rolled back unseen). A read-back after the
    move catches a remote registry changed by a process outside the lock.
    """
    from datetime import UTC, datetime

    with alias_lock(lock_dir):
        _reconcile(client, name)
        previous = _alias_version(client, name, PREVIOUS_CHAMPION)
        current = _alias_version(client, name, CHAMPION)
        if previous is None:
            raise RegistryError(f"{name!r} has no {PREVIOUS_CHAMPION!r} version to roll back to")
        if current is None:
            raise RegistryError(f"{name!r} has no champion to roll back")
        if expected is not None and current != expected:
            raise ChampionMoved(f"{name}: champion is v{current}, not v{expected}: nothing rolled back")
        at = datetime.now(UTC).isoformat(timespec="seconds")
        client.set_registered_model_alias(name, CHAMPION, previous)
        client.set_registered_model_alias(name, PREVIOUS_CHAMPION, current)
        now = _alias_version(client, name, CHAMPION)
        if now != previous:
            raise ChampionMoved(f"{name}: another process moved champion to v{now} during the rollback")
        history.record(client, name, Audit(reason, via).move("rollback", previous, *_aliases(client, name)))
    note = f"{at}: {reason}"[:5000]
    client.set_model_version_tag(name, current, "rolled_back", note)
    client.set_model_version_tag(name, previous, "restored_by_rollback", note)
    client.set_registered_model_tag(name, "last_rollback", f"v{current} -> v{previous}; {note}"[:5000])
    return Rollback(name, previous, current, reason, at)


def list_models(client: MlflowClient) -> list[str]:
    return sorted(m.name for m in client.search_registered_models())


def tag_version(client: MlflowClient, name: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value)[:5000])


class ChallengerMoved(RegistryError):
    """The challenger is no longer the version the caller judged."""


@dataclass(frozen=True)
class ChallengerInfo:
    """The version the `challenger` alias points at, and how the service tries it."""

    name: str
    version: str
    run_id: str | None
    tags: dict[str, str]

    @property
    def rollout(self) -> str:
        return self.tags.get("rollout", "shadow")

    @property
    def since(self) -> str | None:
        return self.tags.get("challenger_since")

    @property
    def canary_share(self) -> float:
        return float(self.tags.get("canary_share") or 0.0)

    @property
    def recheck_of(self) -> str | None:
        """The champion promoted without labels whose promotion this (outgoing) version re-checks."""
        return self.tags.get(RECHECK_OF) or None


def get_challenger(client: MlflowClient, name: str) -> ChallengerInfo | None:
    version = _alias_version(client, name, CHALLENGER)
    if version is None:
        return None
    found = client.get_model_version(name, version)
    return ChallengerInfo(name, version, found.run_id, dict(found.tags or {}))


def set_challenger(
    client: MlflowClient,
    name: str,
    version: str,
    tags: dict[str, str],
    *,
    expected_champion: str | None,
    audit: Audit,
    lock_dir: Path | None = None,
) -> str | None:
    """Point `challenger` at `version` (tagged with how it is tried: rollout, canary_share, since),
    if the champion is still the one it was judged against; returns the challenger it replaced
    (tagged as superseded). Recorded in the trail as `challenger_started`."""
    with alias_lock(lock_dir):
        _reconcile(client, name)
        champion = _alias_version(client, name, CHAMPION)
        if champion != expected_champion:
            raise ChampionMoved(
                f"{name}: champion is now v{champion}, not v{expected_champion} as when v{version} was evaluated; "
                "not made challenger (a new run will compare against the current champion)"
            )
        replaced = _alias_version(client, name, CHALLENGER)
        tag_version(client, name, version, {RECHECK_OF: "", **tags})  # a re-check only when it says so
        client.set_registered_model_alias(name, CHALLENGER, version)
        if replaced is not None and replaced != version:
            tag_version(client, name, replaced, {"challenger.ended": f"superseded by v{version}"})
        history.record(client, name, audit.move("challenger_started", version, *_aliases(client, name)))
    return replaced if replaced != version else None


def end_challenger(
    client: MlflowClient,
    name: str,
    version: str,
    audit: Audit,
    *,
    tags: dict[str, str] | None = None,
    lock_dir: Path | None = None,
) -> None:
    """Retire the challenger `version` (the alias is removed; the version keeps its tags and why).
    `ChallengerMoved` if the alias points elsewhere now."""
    with alias_lock(lock_dir):
        _reconcile(client, name)
        current = _alias_version(client, name, CHALLENGER)
        if current != version:
            raise ChallengerMoved(f"{name}: the challenger is {f'v{current}' if current else 'absent'}, not v{version}")
        client.delete_registered_model_alias(name, CHALLENGER)
        tag_version(client, name, version, {"challenger.ended": "retired", **(tags or {})})
        history.record(client, name, audit.move("challenger_retired", version, *_aliases(client, name)))
