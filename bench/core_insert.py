"""The batch-ingest ceiling: SQLAlchemy Core inserts of the same event rows, 1000 a transaction, on a fresh database."""

import argparse
import asyncio
import json
import pathlib
import time

from bench.workload import read_batches
from postbacks.v1 import event_service_pb2
from server.api import translate
from server.services.ingest import _event_row
from server.store.db import Database
from server.store.models import Event


def event_rows(batches: list[bytes]) -> list[list[dict[str, object]]]:
    """The `events` rows the server would write for each request (validated and normalised by the server's own
    code), built before the clock starts: the ceiling is the database's, not the translation's."""
    now_us = int(time.time() * 1e6)
    per_batch = []
    for raw in batches:
        request = event_service_pb2.BatchIngestEventsRequest.FromString(raw)
        game_id = translate.parse_game(request.parent)
        events = translate.events_from_proto(request.events, "events", now_us)
        per_batch.append([_event_row(game_id, e, e.fingerprint(), now_us) for e in events])
    return per_batch


async def insert_all(database_url: str, batches: list[list[dict[str, object]]], concurrency: int) -> dict:  # type: ignore[type-arg]
    # The server's Database: same pragmas (WAL, synchronous=FULL) and BEGIN IMMEDIATE as the real writes.
    db = Database(database_url)
    await db.migrate()
    table = Event.__table__
    pending = list(reversed(batches))
    inserted = 0

    async def writer() -> None:
        nonlocal inserted
        while pending:
            rows = pending.pop()
            async with db.engine.begin() as conn:
                await conn.execute(table.insert(), rows)
            inserted += len(rows)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(writer() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    finally:
        await db.close()
    return {"events": inserted, "seconds": round(seconds, 3), "per_second": round(inserted / seconds, 1),
            "concurrency": concurrency}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", required=True, help="a fresh database (migrated here)")
    parser.add_argument("--batches", type=pathlib.Path, required=True, help="file written by workload.write_batches")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    rows = event_rows(read_batches(args.batches))
    try:
        import uvloop

        result = uvloop.run(insert_all(args.database_url, rows, args.concurrency))
    except ImportError:
        result = asyncio.run(insert_all(args.database_url, rows, args.concurrency))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
