"""``recops bench``: the benchmarks are exactly the Makefile's ``bench`` lines."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from recops.cli import app
from recops.cli.bench import benchmark_plan
from recops.config import REPO_ROOT
from typer.testing import CliRunner


def test_bench_list_json_matches_the_makefile_and_the_modules() -> None:
    out = CliRunner().invoke(app, ["bench", "--list", "--json"])

    assert out.exit_code == 0, out.output
    listed = json.loads(out.stdout)
    names = [row["name"] for row in listed]
    makefile = (REPO_ROOT / "Makefile").read_text()
    bench_target = makefile.split("\nbench:", 1)[1].split("\n\n", 1)[0]
    assert names == re.findall(r"python -m benchmarks\.(\w+)", bench_target)
    assert all((REPO_ROOT / "benchmarks" / f"{n}.py").is_file() for n in names)
    only = CliRunner().invoke(app, ["bench", "--list", "--json", "--only", names[-1]])
    assert [row["name"] for row in json.loads(only.stdout)] == [names[-1]]
    unknown = CliRunner().invoke(app, ["bench", "--only", "no_such_bench"])
    assert unknown.exit_code == 1 and names[0] in unknown.stderr


def test_bench_without_a_checkout_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no benchmarks/"):
        benchmark_plan(tmp_path)
