"""`python -m bench.traced_server ARGS`: the real server, instrumented: tracemalloc growth on SIGUSR1, SQL timings."""

import atexit
import os
import re
import signal
import sys
import time
import tracemalloc

# Set by the benchmark: where the reports go (each instrument is on only when its variable is set).
TRACE_OUT_ENV = "BENCH_TRACE_OUT"
SQL_OUT_ENV = "BENCH_SQL_OUT"
END_MARKER = "--- end of report"


def trace_allocations(out_path: str, frames: int = 6) -> None:
    """Each SIGUSR1 appends what grew since the first one (which takes the baseline)."""
    tracemalloc.start(frames)
    baseline: list[tracemalloc.Snapshot] = []
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap>")]

    def report(_signum: int, _frame: object) -> None:
        # Runs on the main thread between bytecodes, so the heap is not changing under the snapshot.
        snapshot = tracemalloc.take_snapshot().filter_traces(ignore)
        current, peak = tracemalloc.get_traced_memory()
        lines = [f"=== {time.strftime('%H:%M:%S')} traced {current / 2**20:.1f} MB (peak {peak / 2**20:.1f} MB)"]
        if not baseline:
            baseline.append(snapshot)
            lines.append("baseline taken")
        else:
            for stat in snapshot.compare_to(baseline[0], "traceback")[:12]:
                lines.append(f"\n{stat.size_diff / 2**20:+.1f} MB in {stat.count_diff:+,} blocks, allocated at:")
                lines += [f"    {line}" for line in stat.traceback.format(most_recent_first=True)]
        lines.append(END_MARKER)
        with open(out_path, "a") as out:
            out.write("\n".join(lines) + "\n")

    signal.signal(signal.SIGUSR1, report)


def time_statements(out_path: str) -> None:
    """Wall time per SQL statement shape (IN-lists folded), written when the server exits."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    totals: dict[str, list[float]] = {}  # shape -> [calls, seconds, rows]
    started: dict[int, float] = {}

    @event.listens_for(Engine, "before_cursor_execute")
    def before(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        started[id(cursor)] = time.perf_counter()

    @event.listens_for(Engine, "after_cursor_execute")
    def after(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        seconds = time.perf_counter() - started.pop(id(cursor), time.perf_counter())
        shape = re.sub(r"(\?|\$\d+|__\[POSTCOMPILE_\w+\])(\s*,\s*(\?|\$\d+))+", "?…", " ".join(statement.split()))
        entry = totals.setdefault(("MANY " if executemany else "") + shape, [0, 0.0, 0])
        entry[0] += 1
        entry[1] += seconds
        entry[2] += max(0, cursor.rowcount or 0)

    def report() -> None:
        grand = sum(e[1] for e in totals.values()) or 1.0
        lines = [f"SQL wall time by statement (total {grand:.1f}s, including waits for the driver's thread):"]
        for shape, (calls, seconds, rows) in sorted(totals.items(), key=lambda kv: -kv[1][1])[:25]:
            lines.append(f"\n{100 * seconds / grand:5.1f}%  {seconds:7.2f}s  {int(calls):>7,} calls  "
                         f"{1000 * seconds / calls:8.2f} ms/call" + (f"  {int(rows):,} rows changed" if rows else "")
                         + f"\n    {shape[:600]}")
        with open(out_path, "w") as out:
            out.write("\n".join(lines) + "\n")

    atexit.register(report)


def main() -> None:
    if os.environ.get(TRACE_OUT_ENV):
        trace_allocations(os.environ[TRACE_OUT_ENV], int(os.environ.get("BENCH_TRACE_FRAMES", "6")))
    if os.environ.get(SQL_OUT_ENV):
        time_statements(os.environ[SQL_OUT_ENV])
    from server.__main__ import main as serve

    serve(sys.argv[1:])


if __name__ == "__main__":
    main()
