"""API key use cases: create (the key is returned once), list, revoke, look up, and the development key."""

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select, update

from server.core import limits
from server.core.access import Grant, KeyKind, key_digest, new_key, normalise_key_id, normalise_origin
from server.errors import NotFound, Violations
from server.services.context import ServiceContext
from server.store.models import ApiKey

DEVELOPMENT_LABEL = "development key (honoured only in development mode)"


@dataclass(frozen=True, slots=True)
class KeyView:
    key_id: str
    kind: KeyKind
    games: tuple[str, ...]
    origins: tuple[str, ...]
    label: str
    create_time_us: int
    revoke_time_us: int | None


def _view(row: ApiKey) -> KeyView:
    return KeyView(row.key_id, KeyKind(row.kind), _split(row.games), _split(row.origins), row.label,
                   row.create_time_us, row.revoke_time_us)


def _split(text: str) -> tuple[str, ...]:
    return tuple(g for g in text.split(",") if g)


def _origins(kind: KeyKind, origins: Iterable[str], violations: Violations) -> tuple[str, ...]:
    origins = tuple(origins)
    if kind != KeyKind.PUBLISHABLE:
        if origins:
            violations.add("origins", "only a publishable key is limited to origins")
        return ()
    if not origins:
        violations.add("origins", "a publishable key needs at least one origin, such as https://www.mygame.com")
    normalised = set()
    for i, origin in enumerate(origins):
        if (value := normalise_origin(origin)) is None:
            violations.add(f"origins[{i}]", "must be a web origin: http(s)://host[:port], without a path; got "
                                            f"{origin[:200]!r}")
        else:
            normalised.add(value)
    return tuple(sorted(normalised))


async def create_key(ctx: ServiceContext, kind: KeyKind, games: Iterable[str], label: str = "",
                     origins: Iterable[str] = ()) -> tuple[str, KeyView]:
    """Returns the new key, which is stored only as its hash, and its listing."""
    games = tuple(sorted(set(games)))
    violations = Violations()
    if kind in (KeyKind.INGEST, KeyKind.PUBLISHABLE) and len(games) != 1:
        violations.add("games", f"{'an' if kind == KeyKind.INGEST else 'a'} {kind.value} key is bound to exactly "
                                "one game")
    if len(label) > limits.API_KEY_LABEL:
        violations.add("label", f"must be at most {limits.API_KEY_LABEL} characters")
    allowed_origins = _origins(kind, origins, violations)
    violations.raise_if_any()
    key, key_id = new_key()
    row = ApiKey(key_id=key_id, key_sha256=key_digest(key), kind=kind.value, games=",".join(games),
                 origins=",".join(allowed_origins), label=label, create_time_us=ctx.clock(), revoke_time_us=None)
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
    if row is None:
        return None
    return Grant(row.key_id, KeyKind(row.kind), frozenset(_split(row.games)), frozenset(_split(row.origins)))


async def publishable_origins(ctx: ServiceContext) -> frozenset[str]:
    """Every origin some valid publishable key lists: the origins a CORS preflight, which carries no key, may be
    answered for."""
    async with ctx.db.snapshot() as session:
        rows = await session.scalars(select(ApiKey.origins).where(ApiKey.kind == KeyKind.PUBLISHABLE.value,
                                                                  ApiKey.revoke_time_us.is_(None)))
        return frozenset(origin for text in rows for origin in _split(text))


async def ensure_development_key(ctx: ServiceContext, remembered: str | None) -> tuple[str, bool]:
    """The development key to use: the remembered one while it is still a valid development key, else a new one.
    Returns the key and whether it was just created."""
    if remembered:
        grant = await find_grant(ctx, key_digest(remembered))
        if grant is not None and grant.kind == KeyKind.DEVELOPMENT:
            return remembered, False
    key, _ = await create_key(ctx, KeyKind.DEVELOPMENT, (), DEVELOPMENT_LABEL)
    return key, True
