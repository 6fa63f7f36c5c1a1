"""API key use cases: create (the key is returned once), list, revoke, look up, and the development key."""

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select, update

from server.core import limits
from server.core.access import Grant, KeyKind, key_digest, new_key, normalise_key_id
from server.errors import InvalidArgument, NotFound
from server.services.context import ServiceContext
from server.store.models import ApiKey

DEVELOPMENT_LABEL = "development key (honoured only in development mode)"


@dataclass(frozen=True, slots=True)
class KeyView:
    key_id: str
    kind: KeyKind
    games: tuple[str, ...]
    label: str
    create_time_us: int
    revoke_time_us: int | None


def _view(row: ApiKey) -> KeyView:
    return KeyView(row.key_id, KeyKind(row.kind), _games(row.games), row.label, row.create_time_us,
                   row.revoke_time_us)


def _games(text: str) -> tuple[str, ...]:
    return tuple(g for g in text.split(",") if g)


async def create_key(ctx: ServiceContext, kind: KeyKind, games: Iterable[str], label: str = "") -> tuple[str, KeyView]:
    """Returns the new key, which is stored only as its hash, and its listing."""
    games = tuple(sorted(set(games)))
    if kind == KeyKind.INGEST and len(games) != 1:
        raise InvalidArgument.single("games", "an ingest key is bound to exactly one game")
    if len(label) > limits.API_KEY_LABEL:
        raise InvalidArgument.single("label", f"must be at most {limits.API_KEY_LABEL} characters")
    key, key_id = new_key()
    row = ApiKey(key_id=key_id, key_sha256=key_digest(key), kind=kind.value, games=",".join(games), label=label,
                 create_time_us=ctx.clock(), revoke_time_us=None)
    async with ctx.db.transaction() as session:
        session.add(row)
    return key, _view(row)


async def list_keys(ctx: ServiceContext) -> list[KeyView]:
    async with ctx.db.snapshot() as session:
        rows = (await session.execute(select(ApiKey).order_by(ApiKey.id))).scalars().all()
    return [_view(r) for r in rows]


async def revoke_key(ctx: ServiceContext, key_id: str) -> KeyView:
    """Revokes a key for good; revoking it again changes nothing."""
    key_id = normalise_key_id(key_id)
    async with ctx.db.transaction() as session:
        await session.execute(update(ApiKey).where(ApiKey.key_id == key_id, ApiKey.revoke_time_us.is_(None))
                              .values(revoke_time_us=ctx.clock()))
        row = await session.scalar(select(ApiKey).where(ApiKey.key_id == key_id))
    if row is None:
        raise NotFound(f"no API key with id {key_id}", reason="API_KEY_NOT_FOUND")
    return _view(row)


async def find_grant(ctx: ServiceContext, key_sha256: str) -> Grant | None:
    """What the key with this hash may do; None when no such key exists or it was revoked."""
    async with ctx.db.snapshot() as session:
        row = await session.scalar(select(ApiKey).where(ApiKey.key_sha256 == key_sha256,
                                                        ApiKey.revoke_time_us.is_(None)))
    return Grant(row.key_id, KeyKind(row.kind), frozenset(_games(row.games))) if row else None


async def ensure_development_key(ctx: ServiceContext, remembered: str | None) -> tuple[str, bool]:
    """The development key to use: the remembered one while it is still a valid development key, else a new one.
    Returns the key and whether it was just created."""
    if remembered:
        grant = await find_grant(ctx, key_digest(remembered))
        if grant is not None and grant.kind == KeyKind.DEVELOPMENT:
            return remembered, False
    key, _ = await create_key(ctx, KeyKind.DEVELOPMENT, (), DEVELOPMENT_LABEL)
    return key, True
