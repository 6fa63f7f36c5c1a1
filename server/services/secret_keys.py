"""Secret key rotation: re-encrypts every stored credential with the newest key, so older keys can be retired."""

from dataclasses import dataclass

from sqlalchemy import select

from server.services.configs import sealing_context
from server.services.context import ServiceContext
from server.store.models import PostbackConfig


@dataclass(frozen=True, slots=True)
class ResealReport:
    resealed: int
    total: int


async def reseal_credentials(ctx: ServiceContext) -> ResealReport:
    """Re-seals, in one transaction, each credential not yet sealed with the newest key (deleted configs' too:
    their ciphertexts stay in the database and must not depend on a retired key)."""
    async with ctx.db.transaction() as session:
        rows = (await session.execute(select(PostbackConfig).order_by(PostbackConfig.id))).scalars().all()
        stale = [row for row in rows if not ctx.secrets.is_current(row.access_token_sealed)]
        for row in stale:
            context = sealing_context(row.game_id, row.config_id)
            row.access_token_sealed = ctx.secrets.seal(ctx.secrets.open(row.access_token_sealed, context=context),
                                                       context=context)
    return ResealReport(resealed=len(stale), total=len(rows))
