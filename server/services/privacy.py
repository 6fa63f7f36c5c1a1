"""Erasing a player's data: their events, identity links and postbacks not yet delivered go; a tombstone stays."""

from dataclasses import dataclass

from sqlalchemy import delete, func, insert, select, text

from server.core.erasure import erasure_subject, subject_digests
from server.services.context import ServiceContext
from server.services.conversions import CONVERSION_KINDS
from server.store.models import PENDING, Delivery, Erasure, Event, IdentityLink, RenderedPostback
from server.store.queries import game_rows_matching


@dataclass(frozen=True, slots=True)
class ErasureRequest:
    """Who to erase; at least one is set. The email arrives hashed as TikTok hashes it, as events store it."""

    user_id: str | None
    anonymous_id: str | None
    email_sha256: str | None


@dataclass(frozen=True, slots=True)
class ErasureReport:
    deleted_event_count: int
    deleted_identity_link_count: int
    deleted_conversion_count: int
    cancelled_postback_count: int


async def delete_user_data(ctx: ServiceContext, game_id: str, request: ErasureRequest) -> ErasureReport:
    """Erases the player in one transaction and records the tombstones that make their later events owe nothing.
    Idempotent: a repeat finds nothing left to remove (only events that arrived since)."""
    now_us = ctx.clock()
    async with ctx.db.transaction() as session:
        if not ctx.db.is_sqlite:
            # Ingestion holds this lock shared (player_locks.py), so taking it alone waits for the ingests under
            # way: an event of this player commits either before (and is erased here) or after (and meets the
            # tombstone). SQLite's single writer gives the same order.
            await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:game))"), {"game": game_id})
        named = (request.user_id, request.anonymous_id, request.email_sha256)
        link_columns = (IdentityLink.user_id, IdentityLink.anonymous_id, IdentityLink.email_sha256)
        first_hop = game_rows_matching(IdentityLink.game_id, game_id,
                                       *zip(link_columns, ({v} if v else set() for v in named), strict=True))
        links = (await session.execute(select(IdentityLink.anonymous_id, IdentityLink.user_id, IdentityLink.email_sha256)
                                       .where(first_hop))).all()
        users = erasure_subject(*named, links).user_ids
        if users:  # the users' own links bring their other devices and emails
            links += (await session.execute(
                select(IdentityLink.anonymous_id, IdentityLink.user_id, IdentityLink.email_sha256)
                .where(IdentityLink.game_id == game_id, IdentityLink.user_id.in_(sorted(users))))).all()
        subject = erasure_subject(*named, links)
        identities = (subject.user_ids, subject.anonymous_ids, subject.email_hashes)

        events = game_rows_matching(Event.game_id, game_id, *zip(
            (Event.user_id, Event.anonymous_id, Event.email_sha256), identities, strict=True))
        conversions = await session.scalar(select(func.count()).select_from(Event).where(
            events, Event.kind.in_(CONVERSION_KINDS)))
        erased_event_rows = select(Event.id).where(events)
        cancelled = await session.scalar(select(func.count()).select_from(Delivery).where(
            Delivery.event_row_id.in_(erased_event_rows), Delivery.state == PENDING))
        # Every pending postback of the game is rendered again when it is sent, from the rows that remain: a kept
        # rendering may carry an erased click's id (a conversion of someone else attributed to it). Deleting
        # explicitly does not depend on the foreign keys' ON DELETE CASCADE being enforced.
        await session.execute(delete(RenderedPostback).where(RenderedPostback.delivery_id.in_(
            select(Delivery.id).where(Delivery.game_id == game_id, Delivery.state == PENDING))))
        await session.execute(delete(Delivery).where(Delivery.event_row_id.in_(erased_event_rows))
                              .execution_options(synchronize_session=False))
        deleted_events = (await session.execute(
            delete(Event).where(events).execution_options(synchronize_session=False))).rowcount
        deleted_links = (await session.execute(
            delete(IdentityLink).where(game_rows_matching(
                IdentityLink.game_id, game_id, *zip(link_columns, identities, strict=True)))
            .execution_options(synchronize_session=False))).rowcount

        digests = subject_digests(*identities)
        known = set((await session.execute(select(Erasure.subject_sha256).where(
            Erasure.game_id == game_id, Erasure.subject_sha256.in_(sorted(digests))))).scalars())
        if digests - known:
            await session.execute(insert(Erasure), [
                {"game_id": game_id, "subject_sha256": d, "erase_time_us": now_us} for d in sorted(digests - known)])
    return ErasureReport(deleted_event_count=deleted_events or 0, deleted_identity_link_count=deleted_links or 0,
                         deleted_conversion_count=conversions or 0, cancelled_postback_count=cancelled or 0)
