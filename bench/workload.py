"""The events benchmarks send: players who click, sign up, launch and buy, serialized as gRPC requests."""

import pathlib
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from postbacks.v1 import event_pb2, event_service_pb2

GAME = "bench"
PARENT = f"games/{GAME}"
BATCH_SIZE = 1000
# Fixed-width text the C load generator replaces with a per-request counter.
PLACEHOLDER = "XXXXXXXXXXXXXXXX"
USER_AGENT = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"


def _event(event_id: str, time_us: int, **fields) -> event_pb2.Event:  # type: ignore[no-untyped-def]
    event = event_pb2.Event(event_id=event_id, **fields)
    event.event_time.FromMicroseconds(time_us)
    return event


def _ip(player: int) -> str:
    return f"10.{(player >> 16) & 255}.{(player >> 8) & 255}.{player & 255}"


def click(player: int, time_us: int, *, with_user: bool = False, key: str = "") -> event_pb2.Event:
    """A paid TikTok click, as the marketing site's pixel reports it: the network comes from the landing URL.
    Ids end in `key`, or else the player's number."""
    key = key or str(player)
    return _event(f"c-{key}", time_us, anonymous_id=f"a-{key}", user_id=f"u-{key}" if with_user else "",
                  ip_address=_ip(player), user_agent=USER_AGENT,
                  ad_click=event_pb2.AdClick(landing_url="https://play.example.com/?utm_source=tiktok"
                                                         f"&utm_campaign=spring&ttclid=E.C.P.{player:012d}v2"))


def identify(player: int, time_us: int, *, key: str = "") -> event_pb2.Event:
    key = key or str(player)
    return _event(f"i-{key}", time_us, user_id=f"u-{key}", anonymous_id=f"a-{key}",
                  email=f"player{player}@example.com", identify=event_pb2.Identify())


def launch(player: int, time_us: int) -> event_pb2.Event:
    return _event(f"l-{player}", time_us, user_id=f"u-{player}", ip_address=_ip(player), user_agent=USER_AGENT,
                  game_launch=event_pb2.GameLaunch())


def purchase(player: int, time_us: int, n: int = 0) -> event_pb2.Event:
    return _event(f"p-{player}-{n}", time_us, user_id=f"u-{player}", ip_address=_ip(player), user_agent=USER_AGENT,
                  purchase=event_pb2.Purchase(value="4.99", currency="USD", order_id=f"o-{player}-{n}",
                                              item_ids=["gems_500"]))


def is_paid(player: int) -> bool:
    """Half the players came through a TikTok ad; the others found the game on their own."""
    return player % 2 == 0


@dataclass
class Workload:
    batches: list[bytes]  # serialized BatchIngestEventsRequest, BATCH_SIZE events each
    owed_per_batch: list[int]  # postbacks each batch's conversions owe (one TikTok config)

    @property
    def postbacks_owed(self) -> int:
        return sum(self.owed_per_batch)


def _workload(events: list[event_pb2.Event], owes: Callable[[event_pb2.Event], bool], parent: str = PARENT) -> Workload:
    batches, owed = [], []
    for start in range(0, len(events), BATCH_SIZE):
        chunk = events[start:start + BATCH_SIZE]
        batches.append(event_service_pb2.BatchIngestEventsRequest(parent=parent, events=chunk).SerializeToString())
        owed.append(sum(1 for e in chunk if owes(e)))
    return Workload(batches, owed)


def _paid_conversion(event: event_pb2.Event) -> bool:
    return event.WhichOneof("kind") in ("game_launch", "purchase") and is_paid(int(event.event_id.split("-")[1]))


def mixed(total_events: int, *, wave_players: int = 200, first_player: int = 0, parent: str = PARENT) -> Workload:
    """About total_events of a realistic mix for many players, in the order they happen: each wave of players
    clicks (paid players only), then signs up, launches, and buys, one stage per step, so a step carries new
    players' clicks next to older players' purchases and attribution must look history up in the database."""
    now_us = int(time.time() * 1e6)
    stage_times = [now_us - s * 600_000_000 for s in (4, 3, 2, 1)]  # click, identify, launch, purchase

    def stage(wave: int, step: int) -> list[event_pb2.Event]:
        players = range(first_player + wave * wave_players, first_player + (wave + 1) * wave_players)
        t = stage_times[step]
        if step == 0:
            return [click(p, t + p % 1000) for p in players if is_paid(p)]
        if step == 1:
            return [identify(p, t + p % 1000) for p in players]
        if step == 2:
            return [launch(p, t + p % 1000) for p in players]
        return [purchase(p, t + p % 1000) for p in players]

    events: list[event_pb2.Event] = []
    step = 0
    while len(events) < total_events:
        for s in range(4):
            if step - s >= 0:
                events += stage(step - s, s)
        step += 1
    return _workload(events[:total_events], _paid_conversion, parent)


def streams(total_events: int, count: int, *, games: int) -> list[Workload]:
    """`count` mixes of total_events / count events each, of players of their own, as `count` game servers would
    send them: all to one game (games=1), or each to a game of its own (games=count, games bench-0, bench-1, ...).
    The rows, and so the attribution work, are the same either way; only the game differs."""
    per_stream = total_events // count
    return [mixed(per_stream, first_player=i * 10 * per_stream,
                  parent=PARENT if games == 1 else f"games/{GAME}-{i % games}") for i in range(count)]


def interleave(workloads: list[Workload]) -> Workload:
    """One batch of each workload in turn: the order in which `len(workloads)` callers, one per workload, take them."""
    batches = [b for group in zip(*(w.batches for w in workloads), strict=True) for b in group]
    owed = [n for group in zip(*(w.owed_per_batch for w in workloads), strict=True) for n in group]
    return Workload(batches, owed)


def backlog(postbacks: int, per_player: int = 10) -> Workload:
    """Paid players' clicks first, then each player's first launch and purchases: `postbacks` owed postbacks."""
    now_us = int(time.time() * 1e6)
    players = range(postbacks // per_player)
    events = [click(p, now_us - 3_600_000_000, with_user=True) for p in players]
    for p in players:
        events.append(launch(p, now_us - 1_800_000_000))
        events += [purchase(p, now_us - 1_200_000_000 + n, n) for n in range(per_player - 1)]
    return _workload(events, lambda e: e.WhichOneof("kind") != "ad_click")


def clicked_players(players: int) -> Workload:
    """Setup for the latency benchmark: each player clicked an ad and signed up, so each purchase owes a postback.
    Player p's ids end in p as the C client writes its counter (PLACEHOLDER's width, zero-padded), so
    paced_purchase_template's request number p is player p's purchase."""
    now_us = int(time.time() * 1e6)
    events: list[event_pb2.Event] = []
    for p in range(players):
        key = paced_key(p)
        events += [click(p, now_us - 3_600_000_000, key=key), identify(p, now_us - 3_000_000_000, key=key)]
    return _workload(events, lambda e: False)


def paced_key(counter: int) -> str:
    """What the C client writes in place of PLACEHOLDER for this request counter."""
    return f"{counter:0{len(PLACEHOLDER)}d}"


def paced_purchase_template(directory: pathlib.Path) -> pathlib.Path:
    """The latency benchmark's IngestEventRequest for the C client: request k is player k's purchase (of
    clicked_players), with event id paced_event_id(paced_key(k))."""
    now_us = int(time.time() * 1e6) - 60_000_000
    event = _event(paced_event_id(PLACEHOLDER), now_us, user_id=f"u-{PLACEHOLDER}", ip_address="10.1.2.3",
                   user_agent=USER_AGENT,
                   purchase=event_pb2.Purchase(value="4.99", currency="USD", order_id=f"o-{PLACEHOLDER}",
                                               item_ids=["gems_500"]))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "paced-purchase.bin"
    path.write_bytes(event_service_pb2.IngestEventRequest(parent=PARENT, event=event).SerializeToString())
    return path


def paced_event_id(key: str) -> str:
    return f"lp-{key}"


# Unary requests come in pairs of one player (the C client's --key-divisor): a paid click, then a purchase that
# owes the click's network a postback.
UNARY_PAIR = 2


def unary_templates(directory: pathlib.Path) -> list[pathlib.Path]:
    """IngestEventRequest bodies for the C client: a new player's paid TikTok click (signed in: it carries the
    user id) and that player's purchase, with PLACEHOLDER in every id; with --key-divisor UNARY_PAIR each pair is a
    new player, and each purchase owes one postback."""
    now_us = int(time.time() * 1e6) - 60_000_000
    bodies = {
        "click": _event(f"uc-{PLACEHOLDER}", now_us - 1_000_000, user_id=f"u-{PLACEHOLDER}",
                        anonymous_id=f"a-{PLACEHOLDER}", ip_address="10.1.2.3", user_agent=USER_AGENT,
                        ad_click=event_pb2.AdClick(landing_url="https://play.example.com/?utm_source=tiktok"
                                                               f"&ttclid=E.C.P.{PLACEHOLDER}")),
        "purchase": _event(f"up-{PLACEHOLDER}", now_us, user_id=f"u-{PLACEHOLDER}", ip_address="10.1.2.3",
                           user_agent=USER_AGENT,
                           purchase=event_pb2.Purchase(value="4.99", currency="USD", order_id=f"o-{PLACEHOLDER}")),
    }
    paths = []
    directory.mkdir(parents=True, exist_ok=True)
    for name, event in bodies.items():
        path = directory / f"ingest-{name}.bin"
        path.write_bytes(event_service_pb2.IngestEventRequest(parent=PARENT, event=event).SerializeToString())
        paths.append(path)
    return paths


def write_batches(path: pathlib.Path, batches: Iterable[bytes]) -> None:
    """Length-prefixed serialized requests, read back by the client processes."""
    with path.open("wb") as f:
        for batch in batches:
            f.write(struct.pack(">I", len(batch)))
            f.write(batch)


def read_batches(path: pathlib.Path) -> list[bytes]:
    data = path.read_bytes()
    batches, offset = [], 0
    while offset < len(data):
        (size,) = struct.unpack_from(">I", data, offset)
        batches.append(data[offset + 4:offset + 4 + size])
        offset += 4 + size
    return batches
