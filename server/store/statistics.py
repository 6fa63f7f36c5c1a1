"""PostgreSQL planner statistics for the tables ingest and delivery grow faster than autovacuum looks at them."""

import asyncio
import logging

from sqlalchemy import String, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY

from server.store.db import Database

log = logging.getLogger("postbacks")

# The tables whose lookups take a list of values (= ANY(array)): without statistics the planner takes a game's or
# the pending outbox's rows as a handful, scans them all through the index's first column and filters each against
# the list. On a fresh database 20,000 events in one game made the history read 130 ms instead of 2 and rendering
# a batch's postbacks 520 ms, growing with every row; autovacuum first looks after a minute (autovacuum_naptime).
HOT_TABLES = ("events", "identity_links", "deliveries", "rendered_postbacks", "delivery_logs")
# A table is analyzed again once this share of it changed since it last was (autovacuum's default is 10% + 50 rows,
# looked at once a minute): a table that grows from nothing is analyzed about 20 times by 200,000 rows.
CHANGED_SHARE = 0.2
CHANGED_FLOOR = 1000
# The sample these analyses take: 300 rows per unit of target (the default, 100, takes 30,000). The lookups above
# need to know that an identity matches few rows, which a smaller sample tells as well, and an analysis costs in
# proportion to its sample, on a database that ingest keeps busy (docs/performance.md). Autovacuum's own analyses,
# with the server's default target, still follow as the table grows.
STATISTICS_TARGET = 20
_STALE = text(
    "SELECT relname FROM pg_stat_user_tables WHERE relname = ANY(:tables) "
    "AND n_mod_since_analyze > greatest(:floor, :share * n_live_tup) ORDER BY relname"
).bindparams(bindparam("tables", type_=ARRAY(String)))


async def analyze_stale_tables(db: Database) -> list[str]:
    """ANALYZEs the hot tables that changed by more than CHANGED_SHARE since their last analysis; returns them.
    ANALYZE samples at most 300 x STATISTICS_TARGET rows and blocks no reads or writes."""
    async with db.engine.connect() as connection:
        stale = list((await connection.execute(
            _STALE, {"tables": list(HOT_TABLES), "floor": CHANGED_FLOOR, "share": CHANGED_SHARE})).scalars())
        if stale:
            await connection.execute(text(f"SET LOCAL default_statistics_target = {STATISTICS_TARGET}"))
        for table in stale:
            await connection.execute(text(f'ANALYZE "{table}"'))
        await connection.commit()
    return stale


async def keep_statistics_fresh(db: Database, interval_s: float) -> None:
    """Runs until cancelled (PostgreSQL only); a failed round is logged and tried again at the next interval."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            analyzed = await analyze_stale_tables(db)
            if analyzed:
                log.debug("analyzed %s", ", ".join(analyzed))
        except Exception:
            log.exception("refreshing planner statistics failed")
