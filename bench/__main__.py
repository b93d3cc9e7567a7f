"""leadwatch's benchmarks: `python -m bench` prints one line per figure, `name value target`.

    python -m bench [NAME ...] [--only NAME] [--json FILE] [--write-back-n 50,120,500] [--profile-replay FILE]
                    [--days N] [--leads-per-day N]

Benchmarks (in this order): cold_start, bundle, hot_path, sweep_cost, write_back, replay,
scheduling, limits, cost; `python -m bench cost` (or `--only cost`) runs one alone. Each runs
in its own fresh interpreter (`python -m bench --child NAME ...`), so moto's in-process
state, patched botocore hooks and the memory peak of one cannot leak into another. A
figure with a target prints it (`<=0.25`, `==0`, `>=500`); a figure given for context
prints `-`. Everything is measured in the same run; nothing is read from earlier runs.
Progress and details go to stderr. The exit status is 0 whether or not targets are met
(1 only if a benchmark fails to run): these are measurements, not tests.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Figure, note

BENCHES = (
    "cold_start",
    "bundle",
    "hot_path",
    "sweep_cost",
    "write_back",
    "replay",
    "scheduling",
    "limits",
    "cost",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"run only these ({', '.join(BENCHES)})")
    parser.add_argument(
        "--only", choices=BENCHES, action="append", help="run only this benchmark (repeatable)"
    )
    parser.add_argument(
        "--json", type=Path, help="also write every figure, with its definition, to this file"
    )
    parser.add_argument(
        "--write-back-n",
        default="50,120,500",
        help="verdict counts for write_back, comma-separated (default 50,120,500)",
    )
    parser.add_argument(
        "--profile-replay",
        type=Path,
        help="run the replay under cProfile, print its top entries to stderr and save the stats here "
        "(the throughput figure is then a profiled one)",
    )
    parser.add_argument(
        "--days", type=int, help="cost: days of the demo week to replay (default 7; fewer for a quick run)"
    )
    parser.add_argument(
        "--leads-per-day", type=int, default=100, help="cost: leads a working day per tenant (default 100)"
    )
    parser.add_argument("--child", choices=BENCHES, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in BENCHES]
    if unknown:
        parser.error(f"no benchmark {', '.join(unknown)} (choose from {', '.join(BENCHES)})")
    return args


def run_in_process(name: str, args: argparse.Namespace) -> list[Figure]:
    if name == "cold_start":
        from bench import cold_start

        return cold_start.measure()
    if name == "bundle":
        from bench import bundle

        return bundle.measure()
    if name == "hot_path":
        from bench import hot_path

        return hot_path.measure()
    if name == "sweep_cost":
        from bench import sweep_cost

        return sweep_cost.measure()
    if name == "write_back":
        from bench import write_back

        return write_back.measure(tuple(int(n) for n in args.write_back_n.split(",") if n.strip()))
    if name == "scheduling":
        from bench import scheduling

        return scheduling.measure()
    if name == "limits":
        from bench import limits

        return limits.measure()
    if name == "cost":
        from bench import cost

        return cost.measure(days=args.days, leads_per_day=args.leads_per_day)
    from bench import replay

    return replay.measure(profile=args.profile_replay)


def run_child(name: str, args: argparse.Namespace) -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="leadwatch-bench-") as tmp:
        out = Path(tmp) / "figures.json"
        command = [sys.executable, "-m", "bench", "--child", name, "--child-out", str(out)]
        command += ["--write-back-n", args.write_back_n]
        if args.profile_replay:
            command += ["--profile-replay", str(args.profile_replay)]
        if args.days:
            command += ["--days", str(args.days)]
        command += ["--leads-per-day", str(args.leads_per_day)]
        result = subprocess.run(command, cwd=Path(__file__).resolve().parents[1], env=os.environ.copy())
        if result.returncode != 0 or not out.exists():
            raise RuntimeError(f"benchmark {name} failed (exit {result.returncode}); see stderr above")
        return [Figure(**item) for item in json.loads(out.read_text())]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        figures = run_in_process(args.child, args)
        args.child_out.write_text(json.dumps([f.to_dict() for f in figures], default=str))
        return 0

    wanted = [*(args.only or []), *args.names]
    selected = [name for name in BENCHES if not wanted or name in wanted]
    everything: list[dict] = []
    failed = []
    started = time.perf_counter()
    for name in selected:
        bench_started = time.perf_counter()
        try:
            figures = run_child(name, args)
        except Exception as exc:  # report and go on with the others
            note(f"{name}: {exc}")
            failed.append(name)
            continue
        elapsed = time.perf_counter() - bench_started
        for figure in figures:
            print(figure.line(), flush=True)
            everything.append({"bench": name, **figure.to_dict()})
        note(f"{name} took {elapsed:.0f} s")
    total = time.perf_counter() - started
    missed = [f["name"] for f in everything if f["met"] is False]
    note(
        f"{len(everything)} figures in {total:.0f} s; targets missed: {', '.join(missed) or 'none'}"
        + (f"; benchmarks that failed to run: {', '.join(failed)}" if failed else "")
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"seconds": round(total, 1), "figures": everything, "failed": failed}, indent=2, default=str
            )
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
