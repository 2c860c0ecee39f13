"""``benchmarks.scale``'s planning and report on made-up runs: no stage is run."""

from __future__ import annotations

import os
from typing import Any

import pytest

from benchmarks import scale


def _stage(seconds: float, peak: float) -> dict[str, Any]:
    return {"seconds": seconds, "cpu_seconds": seconds, "peak_rss_mib": peak, "result": {}}


def _run(rows: int, engine: str | None, features: tuple[float, float]) -> dict[str, Any]:
    stages = {"generate": _stage(2.0, 100.0), "publish": _stage(3.0, 120.0)}
    stages["features"] = _stage(*features)
    run = scale._summary(rows, engine or "baseline", stages, 0, None)
    if engine is None:  # a file from before the engines: no engine, no shared stages
        del run["engine"], run["shared_stages"]
    return run


def test_stages_for_adds_what_a_stage_needs_in_pipeline_order() -> None:
    assert scale.stages_for(["features"]) == ("generate", "publish", "features")
    assert scale.stages_for(["evaluate"]) == (
        "generate",
        "publish",
        "features",
        "train",
        "evaluate",
    )
    assert scale.stages_for(scale.STAGES) == scale.STAGES


def test_plan_gives_an_engine_its_own_sizes() -> None:
    parser, args = scale._parse_args(
        ["--sizes", "1000000,5000000", "--engines", "spark,duckdb,baseline",
         "--engine-sizes", "spark=5000000"]
    )  # fmt: skip
    assert scale._plan(parser, args) == {
        1_000_000: ["duckdb", "baseline"],
        5_000_000: ["duckdb", "baseline", "spark"],
    }


@pytest.mark.parametrize(
    "argv",
    [["--engines", "polars"], ["--engine-sizes", "spark=5000000"], ["--sizes", "10"]],
)
def test_plan_refuses_unknown_engines_and_tiny_sizes(argv: list[str]) -> None:
    parser, args = scale._parse_args(argv)
    with pytest.raises(SystemExit):
        scale._plan(parser, args)


def test_markdown_has_an_engine_column_ratios_against_baseline_and_old_runs() -> None:
    runs = [
        _run(1_000_000, None, (100.0, 4000.0)),  # an old file's run counts as baseline
        _run(1_000_000, "duckdb", (20.0, 1000.0)),
        _run(5_000_000, "duckdb", (60.0, 2000.0)),
    ]
    text = scale.markdown({"runs": runs})
    assert "| 1,000,000 | duckdb | features | 20.0 | 20.0 | 1,000 |" in text
    assert "| 1,000,000 | baseline | features | 100.0 | 100.0 | 4,000 |" in text
    # The ratio table: duckdb against baseline at 1M only (no baseline at 5M).
    assert "| 1,000,000 | duckdb | 20.0 | 100.0 | 0.20× | 1,000 | 4,000 | 0.25× |" in text
    assert "| 5,000,000 | duckdb | 60.0 |" not in text
    # duckdb has two sizes: a slope row; the features stage's time grew 3× for 5× rows.
    assert "| duckdb |" in text and "| 0.68 |" in text


def test_shared_stages_are_listed_once_per_size() -> None:
    runs = [_run(1_000_000, "duckdb", (20.0, 1000.0)), _run(1_000_000, "spark", (90.0, 3000.0))]
    text = scale.markdown({"runs": runs})
    assert text.count("| 1,000,000 | base: duckdb, spark | publish |") == 1
    assert "| 1,000,000 | spark | **total** | 95.0 |" in text


def test_forecast_extrapolates_from_the_engines_smaller_sizes() -> None:
    done = [_run(1_000_000, "duckdb", (10.0, 1000.0)), _run(2_000_000, "duckdb", (20.0, 2000.0))]
    assert scale._forecast(1_000_000, done) is None
    seconds, peak = scale._forecast(4_000_000, done) or (0.0, 0.0)
    assert seconds == pytest.approx(2 * done[-1]["total_seconds"], rel=0.2)
    assert peak == pytest.approx(4000.0, rel=0.01)


def test_session_usage_sees_this_process() -> None:
    usage = scale._session_usage(os.getsid(0))
    assert os.getpid() in usage
    rss, cpu = usage[os.getpid()]
    assert rss > 10 * 2**20 and cpu > 0
