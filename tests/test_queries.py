"""Query shapes on both databases: the one-parameter IN lists ingest reads with match what an expanded IN does, and
the dispatcher's due queries search the indexes meant for them."""

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from server.services.deliveries import _due
from server.store.db import Database
from server.store.models import Delivery, Event
from server.store.queries import game_rows_in_parameters, game_rows_matching, in_parameter, in_values


async def test_value_lists_match_what_expanded_in_lists_match(database_url: str) -> None:
    db = Database(database_url)
    await db.migrate()
    try:
        async with db.transaction() as session:
            await session.execute(Event.__table__.insert(), [
                {"game_id": game, "event_id": f"e{i}", "kind": "ad_click", "event_time_us": i, "receive_time_us": i,
                 "payload_sha256": "x", "user_id": f"u{i % 3}", "anonymous_id": f"a{i}" if i % 2 else None}
                for game in ("g", "other") for i in range(10)])
        async with db.snapshot() as session:
            async def ids(where) -> list[str]:  # type: ignore[no-untyped-def]
                return sorted((await session.execute(select(Event.event_id).where(where))).scalars())

            for values in (["e1", "e3", "missing"], [], ["it's", "e9"], ["é"] * 3):
                assert await ids((Event.game_id == "g") & in_values(Event.event_id, values)) == \
                    await ids((Event.game_id == "g") & Event.event_id.in_(values))
            row_ids = sorted((await session.execute(select(Event.id).where(Event.game_id == "g"))).scalars())[:4]
            assert sorted((await session.execute(select(Event.id).where(in_values(Event.id, row_ids)))).scalars()) \
                == row_ids
            matching = [(Event.user_id, {"u1"}), (Event.anonymous_id, {"a3", "a4"})]
            either = select(Event.event_id).where(game_rows_in_parameters(
                Event.game_id, "game", (Event.user_id, "users"), (Event.anonymous_id, "anons")))
            assert sorted((await session.execute(either, {"game": "g", "users": {"u1"}, "anons": {"a3", "a4"}}))
                          .scalars()) == await ids(game_rows_matching(Event.game_id, "g", *matching))
            named = select(Event.event_id).where(Event.game_id == "g", in_parameter(Event.event_id, "wanted"))
            for wanted in (["e2", "e5"], set(), {"e7"}):
                assert sorted((await session.execute(named, {"wanted": wanted})).scalars()) == sorted(wanted)
    finally:
        await db.close()


async def test_the_dispatchers_due_queries_search_the_pending_only_indexes(database_url: str) -> None:
    """The due indexes hold pending deliveries only, so a planner may use them only where the query's condition on
    the state implies the index's."""
    db = Database(database_url)
    await db.migrate()
    queries = [select(Delivery.id).where(Delivery.config_row_id == 1, _due(5)).order_by(Delivery.next_attempt_time_us)
               .limit(10), select(Delivery.id).where(_due(5)).limit(1)]

    def plans(session: Session) -> list[str]:
        if not db.is_sqlite:
            session.execute(text("SET LOCAL enable_seqscan = off"))  # an empty table is scanned otherwise
        explain = "EXPLAIN QUERY PLAN " if db.is_sqlite else "EXPLAIN "
        connection = session.connection()
        compiled = [query.compile(dialect=connection.dialect) for query in queries]
        return [" ".join(str(row[-1]) for row in connection.exec_driver_sql(
            explain + c.string, tuple(c.params[name] for name in c.positiontup or ()))) for c in compiled]

    try:
        for plan in await db.read(plans):
            assert "ix_deliveries_pending_" in plan, plan
    finally:
        await db.close()
