"""How an erased player is found and remembered: who an erasure covers, and salted-by-kind hashes of their
identifiers (never the identifiers) as tombstones."""

import hashlib
from collections.abc import Iterable

from server.core.attribution import Player


def subject_digests(user_ids=(), anonymous_ids=(), email_hashes=()) -> set[str]:  # type: ignore[no-untyped-def]
    """One digest per identifier; the kind prefix keeps a user id from matching an equal anonymous id."""
    subjects = [f"user:{u}" for u in user_ids] + [f"anon:{a}" for a in anonymous_ids] + [f"email:{e}" for e in email_hashes]
    return {hashlib.sha256(s.encode()).hexdigest() for s in subjects if s.split(":", 1)[1]}


def erasure_subject(user_id: str | None, anonymous_id: str | None, email_hash: str | None,
                    links: Iterable[tuple[str | None, str, str | None]]) -> Player:
    """Every identity an erasure request covers, given identity links as (anonymous_id, user_id, email_hash).

    The user is the one named, else the users the named anonymous id or email was linked to; with the user come
    every anonymous id and email linked to them, plus the named ones. The walk makes one user hop, as attribution
    does: erasing one user of a shared device erases that device, never the other user's other devices.
    """
    links = list(links)
    if user_id:
        user_ids = {user_id}
    else:
        user_ids = {user for anon, user, email in links
                    if (anonymous_id and anon == anonymous_id) or (email_hash and email == email_hash)}
    anonymous_ids = {anon for anon, user, _ in links if anon and user in user_ids}
    email_hashes = {email for _, user, email in links if email and user in user_ids}
    if anonymous_id:
        anonymous_ids.add(anonymous_id)
    if email_hash:
        email_hashes.add(email_hash)
    return Player(frozenset(user_ids), frozenset(anonymous_ids), frozenset(email_hashes))
