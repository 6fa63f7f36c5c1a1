"""`python -m bench [NAME ...] [--quick] [--database-url URL] [--profile]`: runs the benchmarks, prints the table."""

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import json
import pathlib
import shlex
import sys
import tempfile
import time
import traceback

from bench import machine
from bench.benchmarks import BENCH_DIR, BENCHMARKS, ROUNDS_OF, Options, Result, median_of_rounds

RESULTS = BENCH_DIR / "results.json"
# A smoke run must never overwrite the real figures.
QUICK_RESULTS = BENCH_DIR / "results-quick.json"


def _figure(result: Result) -> str:
    if result.name == "latency":
        return f"{result.details['p50_ms']:,.1f} / {result.details['p99_ms']:,.1f} ms"
    return f"{result.figure:,.0f} {result.unit}" if result.unit != "MB" else f"{result.figure:+,.1f} MB"


def _ceiling(result: Result) -> str:
    return f"{result.ceiling:,.0f} {result.unit}" if result.ceiling else "—"


def _ratio(result: Result) -> str:
    return f"{result.ratio:.2f}" if result.ratio is not None else "—"


def render_table(results: list[Result], info: dict[str, object], quick: bool) -> str:
    rows = [("benchmark", "figure", "ceiling (same run)", "ratio", "target", "met", "failed calls")]
    for r in results:
        rows.append((r.name, _figure(r), _ceiling(r), _ratio(r), r.target,
                     "yes" if r.met else "NO" if r.met is not None else "?", f"{r.errors:,}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"machine: {machine.one_line(info)}"]
    if quick:
        lines.append("QUICK RUN (--quick): counts scaled down; these figures are a smoke test, not the benchmark")
    lines.append("")
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[j]) for j, cell in enumerate(row)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    for r in results:
        lines.append(f"{r.name}: {r.title} [{r.database}{', quick' if r.quick else ''}]")
        lines.append(f"  command:  {r.command}")
        lines.append(f"  ceiling:  {r.ceiling_label}")
        for key, value in r.details.items():
            if isinstance(value, dict | list):
                value = json.dumps(value)
            lines.append(f"  {key}: {value}")
        if r.profile:
            lines.append("  server profile (py-spy):")
            lines += [f"    {line}" for line in r.profile.splitlines()]
        lines.append("")
    return "\n".join(lines)


def save(results: list[Result], info: dict[str, object], path: pathlib.Path) -> None:
    """Merges into the results file by benchmark and database, so running one benchmark keeps the others' figures."""
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        previous = {}
    by_key = {(r["name"], r["database"]): r for r in previous.get("results", [])}
    for r in results:
        entry = dataclasses.asdict(r)
        entry["ratio"] = r.ratio
        entry["machine"] = info
        entry["finished"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        by_key[(r.name, r.database)] = entry
    order = list(BENCHMARKS)
    merged = sorted(by_key.values(), key=lambda e: (order.index(e["name"]) if e["name"] in order else 99,
                                                    e["database"]))
    path.write_text(json.dumps({"machine": info, "results": merged}, indent=2, ensure_ascii=False) + "\n")


def _print_server_errors(work_dir: pathlib.Path) -> None:
    """The servers' own account of a failure: their logs live in the temporary directory, gone after the run."""
    for log in sorted(work_dir.glob("**/server-*.log")):
        lines = log.read_text(errors="replace").splitlines()
        start = next((i for i, line in enumerate(lines) if " ERROR " in line or "Traceback" in line), None)
        if start is not None:
            shown = "\n".join(lines[start:start + 60])
            print(f"bench: first error in {log.relative_to(work_dir)}:\n{shown}", file=sys.stderr, flush=True)


async def run(names: list[str], opts: Options, rounds: int) -> list[Result]:
    results = []
    for name in names:
        print(f"bench: running {name}{' (quick)' if opts.quick else ''} ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        its_rounds: list[Result] = []
        try:
            for number in range(1, (rounds if name in ROUNDS_OF else 1) + 1):
                # Each round on fresh databases and server directories of its own.
                round_dir = opts.work_dir / f"round-{number}" if number > 1 else opts.work_dir
                round_dir.mkdir(exist_ok=True)
                its_rounds.append(await BENCHMARKS[name](dataclasses.replace(opts, work_dir=round_dir)))
                if name in ROUNDS_OF:
                    print(f"bench: {name} round {number}: {_figure(its_rounds[-1])} (ceiling "
                          f"{_ceiling(its_rounds[-1])}, ratio {_ratio(its_rounds[-1])})", file=sys.stderr, flush=True)
        except Exception:
            print(f"bench: {name} failed:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
            _print_server_errors(opts.work_dir)
            continue
        result = median_of_rounds(its_rounds)
        result.details["bench_seconds"] = round(time.monotonic() - started, 1)
        print(f"bench: {name}: {_figure(result)} (ceiling {_ceiling(result)}, ratio {_ratio(result)}) "
              f"in {result.details['bench_seconds']}s", file=sys.stderr, flush=True)
        results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Benchmarks of the postbacks service against their ceilings, "
        "measured in the same run. Prints a table and writes bench/results.json.")
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks to run, of {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="scaled-down counts: a smoke run of a minute or two")
    parser.add_argument("--database-url", default="",
                        help="PostgreSQL server to benchmark on, such as postgresql+asyncpg://postgres@127.0.0.1:5432/ "
                             "(each benchmark creates and drops its own database); default SQLite files")
    parser.add_argument("--profile", action="store_true",
                        help="record each server under load with py-spy into bench/profiles/ and summarise it "
                             "(figures are then only printed, not saved)")
    parser.add_argument("--sql-profile", action="store_true",
                        help="time every SQL statement of the measured servers into bench/profiles/*-sql.txt "
                             "(figures are then only printed, not saved)")
    parser.add_argument("--trace-memory", action="store_true",
                        help="memory: run the server under tracemalloc and write what grew to bench/profiles/")
    parser.add_argument("--ingest-role", default="api", choices=("api", "all"),
                        help="server role for the two ingest benchmarks (default api: ingest measured alone)")
    parser.add_argument("--latency-roles", default="split", choices=("all", "split"),
                        help="latency: an API process beside a dispatcher process on the same database (split, "
                             "the default: the deployment docs/operations.md gives for sustained load) or one server "
                             "process (all, the embedded default)")
    parser.add_argument("--rounds", type=int,
                        help=f"rounds of {', '.join(ROUNDS_OF)}, each with its own ceiling, reported as the median "
                             "figure over the median ceiling (default 3; 1 with --quick or an instrument)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (server logs, databases) and print where it is")
    parser.add_argument("--results", type=pathlib.Path,
                        help=f"JSON file to merge results into (default {RESULTS.relative_to(BENCH_DIR.parent)}, "
                             f"or {QUICK_RESULTS.relative_to(BENCH_DIR.parent)} with --quick)")
    args = parser.parse_args()
    names = args.names or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
    info = machine.describe()

    def command(name: str) -> str:
        argv = [".venv/bin/python", "-m", "bench", name]
        if args.quick:
            argv.append("--quick")
        if args.database_url:
            argv += ["--database-url", args.database_url]
        if args.ingest_role != "api" and name.startswith("ingest"):
            argv += ["--ingest-role", args.ingest_role]
        if args.latency_roles != "split" and name == "latency":
            argv += ["--latency-roles", args.latency_roles]
        if args.rounds is not None and name in ROUNDS_OF:
            argv += ["--rounds", str(args.rounds)]
        return shlex.join(argv)

    instrumented = args.profile or args.sql_profile or args.trace_memory
    rounds = args.rounds if args.rounds is not None else 1 if args.quick or instrumented else 3
    if rounds < 1:
        parser.error("--rounds must be at least 1")

    with contextlib.ExitStack() as stack:
        if args.keep:
            work_dir = tempfile.mkdtemp(prefix="postbacks-bench-")
            print(f"bench: keeping server logs and databases in {work_dir}", file=sys.stderr, flush=True)
        else:
            work_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="postbacks-bench-"))
        opts = Options(quick=args.quick, database_url=args.database_url, work_dir=pathlib.Path(work_dir),
                       profile=args.profile, sql_profile=args.sql_profile, trace_memory=args.trace_memory,
                       ingest_role=args.ingest_role, latency_roles=args.latency_roles, command=command)
        try:
            import uvloop

            results = uvloop.run(run(names, opts, rounds))
        except ImportError:
            results = asyncio.run(run(names, opts, rounds))
    print(render_table(results, info, args.quick), flush=True)
    if results and (args.profile or args.sql_profile or args.trace_memory) and not args.results:
        print("bench: instrumented run: figures not saved (instruments slow the servers); reports are in "
              f"{BENCH_DIR / 'profiles'}", file=sys.stderr)
    elif results:
        results_path = args.results or (QUICK_RESULTS if args.quick else RESULTS)
        save(results, info, results_path)
        print(f"bench: results merged into {results_path}", file=sys.stderr)
    if len(results) < len(names):
        sys.exit(1)


if __name__ == "__main__":
    main()
