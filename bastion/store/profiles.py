"""The state store's target labels and access profiles, and what a profile grant reaches.

A mixin of ``Store`` (like ``Tokens`` and ``Engagements``). Labels are rows of
``target_labels``; a profile is a row of ``profiles`` whose selector is text,
parsed and matched by ``bastion.profiles`` whenever a question is asked, never
cached: a target labelled a second ago is reached, one unlabelled a second ago
is not. A profile grant is a ``grants`` row with ``profile_id`` set and no
target; ``Store.list_grants`` expands it per target (``expand_profile_grants``).
Removed profiles keep their row and grant nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from bastion.errors import AlreadyExists, NotFound, StoreError
from bastion.profiles import Selector, check_key, check_value
from bastion.store import rows
from bastion.store.backends import Backend, Tx
from bastion.store.models import GRANT_OPTIONS, Grant, Profile, Target, TargetKind

if TYPE_CHECKING:
    from bastion.secretbox import SecretBox

UNSET: Any = object()
"""``set_profile``'s marker for "leave this field as it is"."""

_CHUNK = 500


def _no_profile(name: str) -> NotFound:
    return NotFound(f"no profile named '{name}'; see 'bastion profile list'")


def _marks(n: int) -> str:
    return ", ".join("?" * n)


class Profiles:
    """Target labels, profiles and profile-grant expansion; mixed into ``Store``."""

    _db: Backend
    _box: SecretBox

    if TYPE_CHECKING:  # provided by Store

        def _targets(self, tx: Tx, where: str, params: Sequence[Any]) -> list[Target]: ...

    # ------------------------------------------------------------------ labels

    def _labels_of(self, tx: Tx, target_ids: Sequence[int]) -> dict[int, dict[str, str]]:
        found: dict[int, dict[str, str]] = {}
        ids = list(target_ids)
        for i in range(0, len(ids), _CHUNK):
            chunk = ids[i : i + _CHUNK]
            for r in tx.all(
                "SELECT target_id, key, value FROM target_labels"  # noqa: S608  fixed SQL, ? values
                f" WHERE target_id IN ({_marks(len(chunk))})",
                chunk,
            ):
                found.setdefault(int(r["target_id"]), {})[r["key"]] = r["value"]
        return found

    def _set_labels_tx(
        self, tx: Tx, target_id: int, set_: Mapping[str, str], remove: Iterable[str]
    ) -> None:
        for key in remove:
            tx.run("DELETE FROM target_labels WHERE target_id = ? AND key = ?", [target_id, key])
        for key, value in set_.items():
            check_value(check_key(key), value)
            tx.run("DELETE FROM target_labels WHERE target_id = ? AND key = ?", [target_id, key])
            tx.run(
                "INSERT INTO target_labels (target_id, key, value) VALUES (?, ?, ?)",
                [target_id, key, value],
            )

    def set_target_labels(
        self,
        name: str,
        set: Mapping[str, str],  # noqa: A002  the contract's name for it
        remove: Iterable[str] = (),
    ) -> Target:
        """Set labels on a live target and remove others (by key). Raises NotFound.

        Removing a key the target does not have is refused, naming the keys it has
        (a typo would otherwise leave access in place silently).
        """
        with self._db.transaction(write=True) as tx:
            return self._set_target_labels_tx(tx, name, set, remove)

    def _set_target_labels_tx(
        self, tx: Tx, name: str, set_: Mapping[str, str], remove: Iterable[str]
    ) -> Target:
        found = self._targets(tx, "name = ? AND removed_at IS NULL", [name])
        if not found:
            raise NotFound(f"no target named '{name}'; see 'bastion target list'")
        target = found[0]
        gone = [k for k in remove if k not in target.labels]
        if gone:
            have = ", ".join(sorted(target.labels)) or "none"
            raise NotFound(f"target '{name}' has no label '{gone[0]}' (it has: {have})")
        both = sorted(set(set_) & set(remove))
        if both:
            raise StoreError(f"label '{both[0]}' is both set and removed; do one")
        self._set_labels_tx(tx, target.id, set_, remove)
        return self._targets(tx, "id = ?", [target.id])[0]

    # ---------------------------------------------------------------- profiles

    def _profiles(self, tx: Tx, where: str, params: Sequence[Any]) -> list[Profile]:
        return [
            rows.profile(r)
            for r in tx.all(f"SELECT {rows.PROFILE_COLUMNS} FROM profiles WHERE {where}", params)  # noqa: S608  fixed SQL, ? values
        ]

    def _live_profile(self, tx: Tx, name: str) -> Profile:
        found = self._profiles(tx, "name = ? AND removed_at IS NULL", [name])
        if not found:
            raise _no_profile(name)
        return found[0]

    def add_profile(
        self,
        *,
        name: str,
        selector: str,
        logins: Sequence[str] = (),
        credset: str | None = None,
        options: Iterable[str] = (),
        max_duration: float | None = None,
        approvals: int | None = None,
        approvers: Sequence[str] = (),
        created_by: str,
        now: float,
    ) -> Profile:
        """Create a profile. Raises AlreadyExists, or UsageError/StoreError for bad fields."""
        with self._db.transaction(write=True) as tx:
            return self._add_profile_tx(
                tx,
                name=name,
                selector=selector,
                logins=logins,
                credset=credset,
                options=options,
                max_duration=max_duration,
                approvals=approvals,
                approvers=approvers,
                created_by=created_by,
                now=now,
            )

    def _add_profile_tx(
        self,
        tx: Tx,
        *,
        name: str,
        selector: str,
        logins: Sequence[str],
        credset: str | None,
        options: Iterable[str],
        max_duration: float | None,
        approvals: int | None,
        approvers: Sequence[str],
        created_by: str,
        now: float,
    ) -> Profile:
        if not name:
            raise StoreError("a profile needs a name")
        canonical = str(Selector.parse(selector))
        opts = _check_fields(options, max_duration, approvals)
        if self._profiles(tx, "name = ? AND removed_at IS NULL", [name]):
            raise AlreadyExists(f"profile '{name}' already exists; see 'bastion profile list'")
        try:  # the partial unique index on live names decides between two writers
            profile_id = tx.insert(
                "INSERT INTO profiles (name, selector, logins, credset, options, max_duration,"
                " approvals, approvers, created_at, created_by)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                [
                    name,
                    canonical,
                    rows.dump_list(logins),
                    credset,
                    rows.dump_list(sorted(opts)),
                    None if max_duration is None else float(max_duration),
                    approvals,
                    rows.dump_list(approvers),
                    float(now),
                    created_by,
                ],
            )
        except AlreadyExists as e:
            raise AlreadyExists(
                f"profile '{name}' already exists; see 'bastion profile list'"
            ) from e
        return self._profiles(tx, "id = ?", [profile_id])[0]

    def set_profile(
        self,
        name: str,
        *,
        selector: str = UNSET,
        logins: Sequence[str] = UNSET,
        credset: str | None = UNSET,
        options: Iterable[str] = UNSET,
        max_duration: float | None = UNSET,
        approvals: int | None = UNSET,
        approvers: Sequence[str] = UNSET,
    ) -> Profile:
        """Change a live profile's fields (UNSET: leave as is). Raises NotFound.

        A narrower selector takes effect at once: live sessions on targets it no
        longer reaches end at the nodes' next time-box pass (``label-removed``).
        """
        with self._db.transaction(write=True) as tx:
            return self._set_profile_tx(
                tx,
                name,
                selector=selector,
                logins=logins,
                credset=credset,
                options=options,
                max_duration=max_duration,
                approvals=approvals,
                approvers=approvers,
            )

    def _set_profile_tx(self, tx: Tx, name: str, **fields: Any) -> Profile:
        profile = self._live_profile(tx, name)
        sets: list[str] = []
        params: list[Any] = []
        if fields["selector"] is not UNSET:
            sets.append("selector = ?")
            params.append(str(Selector.parse(fields["selector"])))
        if fields["logins"] is not UNSET:
            sets.append("logins = ?")
            params.append(rows.dump_list(fields["logins"]))
        if fields["credset"] is not UNSET:
            sets.append("credset = ?")
            params.append(fields["credset"])
        if fields["options"] is not UNSET:
            sets.append("options = ?")
            params.append(rows.dump_list(sorted(_check_fields(fields["options"], None, None))))
        if fields["max_duration"] is not UNSET:
            _check_fields((), fields["max_duration"], None)
            sets.append("max_duration = ?")
            md = fields["max_duration"]
            params.append(None if md is None else float(md))
        if fields["approvals"] is not UNSET:
            _check_fields((), None, fields["approvals"])
            sets.append("approvals = ?")
            params.append(fields["approvals"])
        if fields["approvers"] is not UNSET:
            sets.append("approvers = ?")
            params.append(rows.dump_list(fields["approvers"]))
        if sets:
            tx.run(f"UPDATE profiles SET {', '.join(sets)} WHERE id = ?", [*params, profile.id])  # noqa: S608  fixed SQL, ? values
        return self._profiles(tx, "id = ?", [profile.id])[0]

    def get_profile(self, name: str) -> Profile | None:
        """The live profile with this name, or None."""
        with self._db.transaction() as tx:
            found = self._profiles(tx, "name = ? AND removed_at IS NULL", [name])
        return found[0] if found else None

    def get_profile_by_id(self, profile_id: int) -> Profile | None:
        """The profile with this id, removed or not (for history), or None."""
        with self._db.transaction() as tx:
            found = self._profiles(tx, "id = ?", [profile_id])
        return found[0] if found else None

    def list_profiles(self, all: bool = False) -> list[Profile]:  # noqa: A002  the CLI's --all
        """Live profiles by name (``all``: removed ones too, by name then id)."""
        where = "1 = 1" if all else "removed_at IS NULL"
        with self._db.transaction() as tx:
            return self._profiles(tx, f"{where} ORDER BY name, id", [])

    def remove_profile(self, name: str, at: float) -> Profile:
        """Retire a profile: its grants reach nothing from now on. Raises NotFound.

        The row stays (grants, requests and audit name it); its grants are not
        revoked but grant nothing, and live sessions under them end with
        ``label-removed`` at the nodes' next time-box pass.
        """
        with self._db.transaction(write=True) as tx:
            return self._remove_profile_tx(tx, name, at)

    def _remove_profile_tx(self, tx: Tx, name: str, at: float) -> Profile:
        profile = self._live_profile(tx, name)
        tx.run("UPDATE profiles SET removed_at = ? WHERE id = ?", [float(at), profile.id])
        return self._profiles(tx, "id = ?", [profile.id])[0]

    # ------------------------------------------------------------------- reach

    def targets_reached_by(self, profile: Profile | str) -> list[Target]:
        """Live targets the profile's selector matches now, by name ([] once removed)."""
        with self._db.transaction() as tx:
            if isinstance(profile, str):
                profile = self._live_profile(tx, profile)
            return self._reached_tx(tx, profile)

    def _reached_tx(self, tx: Tx, profile: Profile) -> list[Target]:
        if profile.removed_at is not None:
            return []
        selector = Selector.parse(profile.selector)
        live = self._targets(tx, "removed_at IS NULL ORDER BY name", [])
        return [t for t in live if selector.matches(t.labels)]

    def _expand_tx(self, tx: Tx, grants: Sequence[Grant], target: Target | None) -> list[Grant]:
        """Profile grants as per-target views: for ``target`` only, or every target reached.

        A grant without its own login gets one view per login of its profile
        (none: the target's default), so admission picks among them as usual.
        A database target gets one view with no login; its credential set is the
        grant's, or the target's only one when the grant names none (as for a
        request naming the target, ``RequestFlow._login_for``).
        """
        by_profile: dict[int, Profile] = {}
        for pid in sorted({g.profile_id for g in grants if g.profile_id is not None}):
            found = self._profiles(tx, "id = ?", [pid])
            if found and found[0].removed_at is None:
                by_profile[pid] = found[0]
        if not by_profile:
            return []
        if target is not None:
            candidates = [target]
        else:
            candidates = self._targets(tx, "removed_at IS NULL ORDER BY name", [])
        views: list[Grant] = []
        for g in grants:
            profile = by_profile.get(g.profile_id) if g.profile_id is not None else None
            if profile is None:
                continue
            selector = Selector.parse(profile.selector)
            for t in candidates:
                if not selector.matches(t.labels):
                    continue
                if t.kind is TargetKind.POSTGRES:
                    only = t.credsets[0].name if len(t.credsets) == 1 else None
                    views.append(replace(_view(g, t, None), credset=g.credset or only))
                    continue
                logins: Sequence[str | None] = (
                    [g.login] if g.login is not None else (profile.logins or [None])
                )
                for login in logins:
                    views.append(_view(g, t, login))
        return views

    def unreached(self, pairs: Sequence[tuple[int, str]]) -> set[tuple[int, str]]:
        """Of (grant id, target name) pairs of live sessions, those a profile no longer reaches.

        Only profile grants are judged (others are the time box's business): the
        pair is returned when the profile was removed, the target is gone, or its
        labels no longer match the selector. Two queries per call, whatever the
        number of sessions; the time box runs it at every pass.
        """
        if not pairs:
            return set()
        grant_ids = sorted({g for g, _ in pairs})
        with self._db.transaction() as tx:
            under: dict[int, tuple[str, float | None]] = {}
            for i in range(0, len(grant_ids), _CHUNK):
                chunk = grant_ids[i : i + _CHUNK]
                for r in tx.all(
                    "SELECT g.id, p.selector, p.removed_at FROM grants g"  # noqa: S608  fixed SQL, ? values
                    f" JOIN profiles p ON p.id = g.profile_id WHERE g.id IN ({_marks(len(chunk))})",
                    chunk,
                ):
                    under[int(r["id"])] = (
                        r["selector"],
                        None if r["removed_at"] is None else float(r["removed_at"]),
                    )
            judged = [(g, t) for g, t in pairs if g in under]
            if not judged:
                return set()
            names = sorted({t for _, t in judged})
            labels: dict[str, dict[str, str]] = {}
            for i in range(0, len(names), _CHUNK):
                chunk_names = names[i : i + _CHUNK]
                for t in self._targets(
                    tx, f"removed_at IS NULL AND name IN ({_marks(len(chunk_names))})", chunk_names
                ):
                    labels[t.name] = dict(t.labels)
        gone: set[tuple[int, str]] = set()
        for grant_id, name in judged:
            selector, removed_at = under[grant_id]
            if (
                removed_at is not None
                or name not in labels
                or not Selector.parse(selector).matches(labels[name])
            ):
                gone.add((grant_id, name))
        return gone


def _view(g: Grant, t: Target, login: str | None) -> Grant:
    return replace(g, target_id=t.id, target_name=t.name, login=login)


def _check_fields(
    options: Iterable[str], max_duration: float | None, approvals: int | None
) -> frozenset[str]:
    opts = frozenset(options)
    unknown = opts - GRANT_OPTIONS
    if unknown:
        raise StoreError(
            f"unknown grant option(s) {', '.join(sorted(unknown))}; "
            f"choose from {', '.join(sorted(GRANT_OPTIONS))}"
        )
    if max_duration is not None and max_duration <= 0:
        raise StoreError("a profile's maximum duration must be positive, e.g. --max 4h")
    if approvals is not None and approvals < 0:
        raise StoreError("a profile's approvals must be 0 or more")
    return opts
