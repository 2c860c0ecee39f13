"""Bringing a large log of one's own: ``recops data infer`` and ``import`` (a script).

    python -m benchmarks.byod [--rows 2000000] [--users 100000] [--items 50000]
        [--workdir DIR]

The log is what users most often have and recops has never seen: one gzipped CSV whose
events carry the product's and the customer's attributes (category code and price; the
country), times in a US pattern (``%m/%d/%Y %H:%M:%S``), view / addtocart / transaction
events over 90 days, Zipf-popular items, written deterministically (seed 0). Each step
runs in a child process, one after the other, timed with its peak memory:

- ``read``: ``pandas.read_csv`` of the file as text, the floor any import pays;
- ``infer``: ``recops data infer`` drafts the spec (keys, the time pattern, event types,
  attributes read from the events);
- ``import``: ``recops data import`` of that spec into a fresh ``RECOPS_HOME``
  (checks, key interning, profiles from the events, the history's GX contract, daily
  partitions).

Each step's figure to read is its time over ``read``'s in the same run (the machines are
noisy). Results go to ``benchmarks/results/byod.json`` and ``byod.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._common import RESULTS_DIR, machine, ratio_text, write_atomic, write_json

_READ = "import pandas, sys; pandas.read_csv(sys.argv[1], dtype=str)"


def write_log(path: Path, rows: int, users: int, items: int) -> None:
    """The one-log CSV (gzipped by its suffix), deterministic for the same arguments."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    user = rng.integers(0, users, rows)
    item = rng.zipf(1.3, rows) % items
    seconds = np.sort(rng.integers(0, 90 * 86_400, rows))
    stamps = pd.Timestamp("2024-01-01") + pd.to_timedelta(seconds, unit="s")
    frame = pd.DataFrame({
        "visitorid": user,
        "event": rng.choice(["view", "view", "view", "addtocart", "transaction"], rows),
        "itemid": item,
        "timestamp": stamps.strftime("%m/%d/%Y %H:%M:%S"),
        "categoryid": item % 200,
        "price": item % 97 + 0.99,
        "country": np.array(["DE", "FR", "UK", "US"])[user % 4],
    })  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)


def _run(argv: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    """One child's wall seconds and peak RSS (GiB, its own, from ``wait4``); raises when
    it fails, with the end of its output (kept in ``log``)."""
    started = time.perf_counter()
    with log.open("w") as out:
        child = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    child.returncode = code  # reaped by wait4: Popen must not wait for it again
    if code != 0:
        raise RuntimeError(f"{argv[:3]} failed ({code}):\n{log.read_text()[-2000:]}")
    # ru_maxrss is in KiB on Linux.
    return {"seconds": round(seconds, 2), "peak_gib": round(usage.ru_maxrss / 2**20, 2)}


def run(rows: int, users: int, items: int, workdir: Path) -> dict[str, Any]:
    """Write the log, then read, infer and import it; the report."""
    log = workdir / f"events-{rows}.csv.gz"
    if not log.exists():
        write_log(log, rows, users, items)
    spec = workdir / "byod.yaml"
    home = workdir / "home"
    shutil.rmtree(home, ignore_errors=True)
    env = {**os.environ, "RECOPS_HOME": str(home)}
    recops = str(Path(sys.executable).with_name("recops"))
    commands = {
        "read": [sys.executable, "-c", _READ, str(log)],
        "infer": [recops, "data", "infer", "--name", "byod", "--events", str(log),
                  "--out", str(spec)],
        "import": [recops, "data", "import", "--spec", str(spec)],
    }  # fmt: skip
    steps = {name: _run(argv, env, workdir / f"{name}.log") for name, argv in commands.items()}
    read = steps["read"]["seconds"]
    for step in steps.values():
        step["over_read"] = round(step["seconds"] / read, 2) if read else None
    return {
        "machine": machine(),
        "rows": rows,
        "users": users,
        "items": items,
        "file_mib": round(log.stat().st_size / 2**20, 1),
        "steps": steps,
    }


def markdown(report: dict[str, Any]) -> str:
    """The report as a table: seconds, peak memory and the ratio to a plain read."""
    read = report["steps"]["read"]["seconds"]
    lines = [
        f"One gzipped CSV of {report['rows']:,} events ({report['file_mib']} MiB), "
        f"{report['users']:,} users, {report['items']:,} items; attributes on the events, "
        "US-pattern times.",
        "",
        "| step | seconds | peak GiB | ÷ read |",
        "|---|---|---|---|",
    ]
    for name, step in report["steps"].items():
        ratio = ratio_text(step["seconds"], read)
        lines.append(f"| {name} | {step['seconds']:.1f} | {step['peak_gib']:.2f} | {ratio} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/recops-bench-byod"))
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "byod.json")
    args = parser.parse_args(argv)
    report = run(args.rows, args.users, args.items, args.workdir)
    write_json(args.out, report)
    write_atomic(args.out.with_suffix(".md"), markdown(report))
    print(markdown(report))
    print(json.dumps(report["steps"]))


if __name__ == "__main__":
    main()
