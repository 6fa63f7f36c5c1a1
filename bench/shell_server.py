"""`python -m bench.shell_server ARGS`: the real server whose IngestEvent stores nothing (the unary benchmark's
second reference: what the gRPC stack, interceptors, authorization, validation and answer cost without the
transaction)."""

import sys
from collections.abc import Sequence

from server.core.events import NewEvent
from server.services.ingest import GroupCommitter, IngestReceipt


async def _receipts_without_storage(self: GroupCommitter, game_id: str,
                                    events: Sequence[NewEvent]) -> list[IngestReceipt]:
    return [IngestReceipt(game_id, event.event_id, False, False, None) for event in events]


def main() -> None:
    GroupCommitter.ingest = _receipts_without_storage  # type: ignore[method-assign]
    from server.__main__ import main as serve

    serve(sys.argv[1:])


if __name__ == "__main__":
    main()
