"""``recops bench``: run the benchmarks of ``make bench``, read from the Makefile."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from recops_models.tf_env import TF_ENV

from recops.cli.common import fail
from recops.config import REPO_ROOT

__all__ = ["BENCH_LINE", "bench", "benchmark_plan"]


#: The Makefile's ``bench`` target is the one list of benchmarks; ``recops bench`` runs
#: exactly its ``python -m benchmarks.X ...`` lines, so adding a line there adds it here.
BENCH_LINE = re.compile(r"^\t(.*?)\$\(BIN\)/python\s+-m\s+benchmarks\.(\w+)(.*)$")


def benchmark_plan(repo_root: Path = REPO_ROOT) -> list[tuple[str, list[str], list[str]]]:
    """``(name, prefix, args)`` of each benchmark, in the order of the Makefile's ``bench`` target.

    ``prefix`` is what the line runs Python under (``nice -n 10``), ``args`` what follows
    the module name.

    Raises:
        FileNotFoundError: No ``benchmarks/`` or ``Makefile`` (installed without the checkout).
    """
    makefile = repo_root / "Makefile"
    if not (repo_root / "benchmarks").is_dir() or not makefile.is_file():
        raise FileNotFoundError(f"no benchmarks/ and Makefile under {repo_root}")
    plan: list[tuple[str, list[str], list[str]]] = []
    in_bench = False
    for line in makefile.read_text().splitlines():
        if not line.startswith("\t"):
            in_bench = line.startswith("bench:")
            continue
        if in_bench and (match := BENCH_LINE.match(line)):
            plan.append((match[2], shlex.split(match[1]), shlex.split(match[3])))
    return plan


def bench(
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Run only this benchmark (repeatable).")
    ] = None,
    list_only: Annotated[
        bool, typer.Option("--list", help="List the benchmarks and exit.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --list: print JSON.")] = False,
) -> None:
    """Run the benchmarks of `make bench` (results under benchmarks/results/)."""
    try:
        plan = benchmark_plan()
    except FileNotFoundError as exc:
        fail(
            str(exc),
            "benchmarks run from the source checkout: clone the repo and run `make bench` there",
        )
    names = [name for name, _, _ in plan]
    unknown = sorted(set(only or ()) - set(names))
    if unknown:
        fail(
            f"unknown benchmark {', '.join(unknown)}",
            f"choose from: {', '.join(names)} (`recops bench --list`)",
        )
    chosen = [step for step in plan if not only or step[0] in only]
    if list_only:
        rows = [
            {"name": name, "module": f"benchmarks.{name}", "args": args, "prefix": prefix}
            for name, prefix, args in chosen
        ]
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
        else:
            for name, prefix, args in chosen:
                line = shlex.join([*prefix, "python", "-m", f"benchmarks.{name}", *args])
                typer.echo(f"{name:<14} {line}")
        return
    env = {
        **os.environ,
        **TF_ENV,
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
    }
    for i, (name, prefix, args) in enumerate(chosen, start=1):
        command = [*prefix, sys.executable, "-m", f"benchmarks.{name}", *args]
        typer.echo(
            f"[{i}/{len(chosen)}] {shlex.join([*prefix, 'python', *command[len(prefix) + 1 :]])}",
            err=True,
        )
        started = time.monotonic()
        code = subprocess.run(command, cwd=REPO_ROOT, env=env, check=False).returncode
        if code != 0:
            fail(
                f"benchmarks.{name} exited with {code}",
                f"its output is above; rerun it alone with `recops bench --only {name}`",
            )
        typer.echo(f"      {name} done in {time.monotonic() - started:.0f} s", err=True)
