"""``benchmarks/recommend.py``: the service part (the paced loop, the ``/metrics`` reading)
and the quality part (the served model and its config on the temporal cut)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from recops.service.metrics import ServiceMetrics
from recops.training import TrainResult


def test_stage_summary_reads_what_the_service_histograms_saw_between_scrapes() -> None:
    from benchmarks._recommend_service import stage_summary

    metrics = ServiceMetrics()
    metrics.stage_latency.labels(stage="retrieval", variant="stable").observe(0.1)  # before
    before = metrics.render().decode()
    for seconds in (0.0008, 0.0009, 0.004):
        metrics.stage_latency.labels(stage="retrieval", variant="stable").observe(seconds)
    metrics.stage_latency.labels(stage="retrieval", variant="canary").observe(0.2)  # not users'
    metrics.latency.labels(route="/v1/recommendations", variant="stable").observe(0.006)
    metrics.latency.labels(route="/v1/recommendations", variant="canary").observe(0.3)
    metrics.latency.labels(route="/metrics", variant="").observe(0.5)
    summary = stage_summary(before, metrics.render().decode())
    assert summary["retrieval"]["n"] == 3
    assert summary["retrieval"]["mean_ms"] == pytest.approx((0.8 + 0.9 + 4.0) / 3, abs=1e-3)
    assert summary["retrieval"]["p50_le_ms"] == 1.0 and summary["retrieval"]["p99_le_ms"] == 5.0
    assert summary["request"]["n"] == 1, "only the recommendations route counts as a request"


def test_paced_loop_keeps_its_rate_counts_errors_and_never_overlaps() -> None:
    from benchmarks._common import paced_loop

    sent: list[int] = []

    def send(i: int) -> None:
        sent.append(i)
        if i % 4 == 3:
            raise RuntimeError(f"no answer for {i}")

    run = paced_loop(send, rate=200.0, seconds=0.25)
    assert sent == list(range(run["requests"])), "in order, one at a time"
    assert run["requests"] == 50, "every send due before the end goes out"
    assert run["errors"] == len([i for i in sent if i % 4 == 3])
    assert len(run["latencies_ms"]) == run["requests"] - run["errors"]
    assert run["error_samples"][0] == "RuntimeError: no answer for 3"


def test_quality_rescores_the_served_model_and_trains_its_config_on_the_temporal_cut(
    tiny_two_tower: TrainResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks._recommend_quality import quality_markdown, quality_section

    trained = tiny_two_tower
    models = {"version": 3, "served_dir": trained.model_dir, "float_dir": trained.model_dir}
    registered = {"served.recall_at_10": 0.5, "recall_at_10": 0.4}
    section = quality_section(models, tmp_path, history_max=50, registered=registered)

    served, temporal = section["served"], section["temporal"]
    # The protocol the run used (its result), not its config's empty "the spec's first".
    assert "served v3 (random holdout)" in capsys.readouterr().out
    assert served["protocol"] == "random" and served["version"] == 3
    assert served["registered"]["recall_at_10"] == 0.5
    assert served["registered"]["offline_recall_at_10"] == 0.4
    assert served["registered"]["ndcg_at_10"] is None, "a figure the registry lacks stays empty"
    for part in (served, temporal):
        assert part["seen_share"] == 0.0 and part["checks"]["seen_share_zero"]
        assert [row["model"] for row in part["rows"]] == [
            "two-tower (serving_default)",
            "popularity (same cut)",
            "ease (same cut)",
        ]
        model = part["rows"][0]
        assert 0.0 <= model["recall_at_10"] <= 1.0 and model["n_users"] > 0
    # The temporal run is the served run's config with only the protocol changed.
    (folder,) = tmp_path.iterdir()
    config = json.loads((folder / "config.json").read_text())
    served_config = json.loads((Path(trained.model_dir).parent / "config.json").read_text())
    assert config["protocol"] == "temporal"
    assert {k: v for k, v in config.items() if k not in ("protocol", "output_dir")} == {
        k: v for k, v in served_config.items() if k not in ("protocol", "output_dir")
    }
    beats = all(
        temporal["rows"][0][m] >= row[m] for row in temporal["rows"][1:] for m in ("recall_at_10",)
    )
    assert temporal["checks"]["recall_at_10_at_least_baselines"] == beats
    # A re-run on the same state reuses the trained folder.
    done = (folder / "_SUCCESS").stat().st_mtime_ns
    again = quality_section(models, tmp_path, history_max=50, registered=registered)
    assert (folder / "_SUCCESS").stat().st_mtime_ns == done
    assert again["temporal"]["rows"] == temporal["rows"]

    text = "\n".join(quality_markdown(section))
    assert "v3 behind `stable`, on its run's random holdout" in text
    assert "| two-tower (serving_default) |" in text and "temporal cut" in text
    assert "Not measured" in "\n".join(quality_markdown(None))
