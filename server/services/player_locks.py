"""PostgreSQL ingest's unit of serialisation: transaction-level advisory locks on the identities of a game's players."""

import hashlib
from collections.abc import Iterable

from sqlalchemy import BigInteger, String, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

# Ingest takes its games' locks shared and an erasure takes its game's exclusively (privacy.py): an erasure waits
# for the ingests of its game under way, and the ingests that come after it wait for it. The identities follow in
# the order of their array, which is sorted: two transactions wanting some of the same identities take them in the
# same order, so neither holds one the other waits for while waiting for one the other holds. One statement, one
# round trip: UNION ALL runs its parts one after the other, so every game's lock comes before any identity's, and
# no transaction holding an identity ever waits for a game.
_LOCK_GAMES_AND_KEYS = text(
    "SELECT count(*) FROM (SELECT pg_advisory_xact_lock_shared(hashtext(game)) FROM unnest(:games) AS game "
    "UNION ALL SELECT pg_advisory_xact_lock(key) FROM unnest(:keys) AS key) AS taken"
).bindparams(bindparam("games", type_=ARRAY(String)), bindparam("keys", type_=ARRAY(BigInteger)))
_LOCK = text("SELECT count(pg_advisory_xact_lock(key)) FROM unnest(:keys) AS key").bindparams(
    bindparam("keys", type_=ARRAY(BigInteger)))
_TRY_LOCK = text("SELECT bool_and(pg_try_advisory_xact_lock(key)) FROM unnest(:keys) AS key").bindparams(
    bindparam("keys", type_=ARRAY(BigInteger)))
# The games alone, exclusively and sorted, as a transaction's first locks (see PlayerLocks).
_LOCK_WHOLE_GAMES = text(
    "SELECT count(pg_advisory_xact_lock(hashtext(game))) FROM unnest(:games) AS game"
).bindparams(bindparam("games", type_=ARRAY(String)))
# PostgreSQL's code for a full shared lock table.
LOCK_TABLE_FULL = "53200"


class LocksNeeded(Exception):  # not an error: a request to start again
    """A transaction found it must hold identities that another transaction holds: it rolls back and starts again,
    taking all of `keys` in order before it reads anything."""

    def __init__(self, keys: frozenset[int]) -> None:
        super().__init__(f"{len(keys)} identity locks needed")
        self.keys = keys


def identity_keys(game_id: str, user_ids: Iterable[str], anonymous_ids: Iterable[str],
                  emails: Iterable[str]) -> set[int]:
    """Lock keys of a game's user ids, anonymous ids and email hashes: 64 bits of BLAKE2b of the game and the
    identity, the same in every replica."""
    prefix = game_id.encode() + b"\0"
    keys = set()
    for kind, values in ((b"u:", user_ids), (b"a:", anonymous_ids), (b"e:", emails)):
        for value in values:
            digest = hashlib.blake2b(prefix + kind + value.encode(), digest_size=8).digest()
            keys.add(int.from_bytes(digest, "big", signed=True))
    return keys


class PlayerLocks:
    """The identity locks one ingest transaction holds. Attribution reads the history of the players its events
    touch and then writes on it; every row it reads is matched by an identity it holds, and every row another
    transaction writes carries identities that transaction holds. So two transactions that could miss each other's
    rows share a lock and run one after the other, while those of different players run side by side.

    Each lock takes a slot of PostgreSQL's shared lock table, which all sessions share (max_locks_per_transaction
    x max_connections, 6,400 by default; about 10,000 fitted here), and a batch of 1,000 events names about 2,500
    identities. A transaction that would hold more than `limit`, or that found the table full, locks its games
    whole instead: it waits for their ingests under way and they for it, as an erasure does."""

    def __init__(self, session: Session, *, limit: int, wait_to_cover: bool = False, whole_games: bool = False) -> None:
        self._session = session
        self._limit = limit
        self._wait_to_cover = wait_to_cover
        self.whole_games = whole_games
        self.held: set[int] = set()

    def lock(self, game_ids: Iterable[str], keys: Iterable[int]) -> None:
        """At the start of the transaction: the games' shared locks, then the keys in order, waiting for each; or
        the games whole."""
        wanted = sorted(set(keys) - self.held)
        if self.whole_games or len(wanted) > self._limit:
            self.whole_games = True
            self._session.execute(_LOCK_WHOLE_GAMES, {"games": sorted(set(game_ids))})
            return
        self._session.execute(_LOCK_GAMES_AND_KEYS, {"games": sorted(set(game_ids)), "keys": wanted})
        self.held.update(wanted)

    def cover(self, game_id: str, user_ids: Iterable[str], anonymous_ids: Iterable[str],
              emails: Iterable[str]) -> bool:
        """Before reading the rows of these identities: takes those not yet held. Returns True when it took any, as
        what was read of them before (the links that named them) may since have changed. Raises LocksNeeded when one
        is held by another transaction, as waiting for it here, out of order, could deadlock; a transaction that
        started again and still found more to take (the links kept changing) waits instead, and PostgreSQL's
        deadlock detector settles the rare cycle."""
        if self.whole_games:
            return False
        missing = identity_keys(game_id, user_ids, anonymous_ids, emails) - self.held
        if not missing:
            return False
        if len(self.held) + len(missing) > self._limit:  # the next attempt locks the games whole
            raise LocksNeeded(frozenset(self.held | missing))
        if self._wait_to_cover:
            self._session.execute(_LOCK, {"keys": sorted(missing)})
        elif not self._session.execute(_TRY_LOCK, {"keys": sorted(missing)}).scalar():
            raise LocksNeeded(frozenset(self.held | missing))
        self.held |= missing
        return True
