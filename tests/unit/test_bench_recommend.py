"""``benchmarks/recommend.py``: the service part (the paced loop, the ``/metrics`` reading)
and the quality part (the served model and its config on the temporal cut)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _tiny_data import TinyData
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


def test_quality_scores_the_list_the_service_returns_under_the_rankers_policy(
    tiny_two_tower: TrainResult, tiny_data: TinyData, tmp_path: Path
) -> None:
    """With a ranker serving under ``fusion``, the targets judge the fused list."""
    import pandas as pd
    from recops.ranking import RankerConfig, train_ranker

    from benchmarks._recommend_quality import quality_markdown, quality_section

    trained = tiny_two_tower
    # The ranker's run beside the retriever's, on its split, as the nightly lays them out.
    frame = pd.read_parquet(tiny_data.training_set_uri)
    frame["user_activity"] = frame.groupby("user_id")["item_id"].transform("size").astype(float)
    frame["item_popularity"] = frame.groupby("item_id")["user_id"].transform("size").astype(float)
    frame.to_parquet(tmp_path / "ranking_set.parquet", index=False)
    train_dir = Path(trained.split_uri).parent
    ranked = train_ranker(
        RankerConfig(
            training_set_uri=str(tmp_path / "ranking_set.parquet"),
            split_uri=trained.split_uri,
            users_uri=tiny_data.users_uri,
            items_uri=tiny_data.items_uri,
            spec_uri=tiny_data.spec_uri,
            output_dir=str(train_dir.parent / "rank-tiny"),
            numeric_features=("user_activity",),
            item_numeric_features=("item_popularity",),
            monitor="logloss",
            epochs=1,
            embedding_dim=8,
            cross_layers=1,
            deep_units=(16,),
            batch_size=256,
            negatives=2,
            replicas=1,
        )
    )
    models = {
        "version": 3,
        "served_dir": trained.model_dir,
        "float_dir": trained.model_dir,
        "ranker": {"version": 2, "served_dir": ranked.model_dir, "policy": "fusion"},
    }
    section = quality_section(models, tmp_path / "work", history_max=50, registered={})

    served, temporal = section["served"], section["temporal"]
    assert [row["model"] for row in served["rows"][:2]] == [
        "two-tower (serving_default)",
        "two-tower + ranker, fused (RRF)",
    ]
    assert served["users_get"] == served["rows"][1], "fusion: the fused list is what users get"
    fused = served["rows"][1]
    assert served["checks"]["recall_at_10_at_or_above_bar"] == (fused["recall_at_10"] >= 0.265)
    # On the temporal cut the ranker's config trains on the temporal retriever's split, and
    # the nightly's rule picks the list.
    retrieval, fused = temporal["rows"][0], temporal["rows"][1]
    better = all(fused[m] >= retrieval[m] for m in ("recall_at_10", "ndcg_at_10"))
    rule = "fusion" if better else "retrieval"
    assert temporal["ranker"]["policy"] == rule
    assert temporal["users_get"] == (fused if rule == "fusion" else retrieval)
    rank_config = json.loads((tmp_path / "work" / "temporal-rank-tiny" / "config.json").read_text())
    (temporal_run,) = (tmp_path / "work").glob("temporal-train*")
    assert rank_config["protocol"] == "temporal"
    assert rank_config["split_uri"] == str(temporal_run / "split.parquet")
    text = "\n".join(quality_markdown(section))
    assert "| two-tower + ranker, fused (RRF) |" in text
    assert "The service returns the `fusion` list (ranker v2's recorded policy)" in text


def test_a_serving_ranker_without_its_run_is_named_not_skipped(tmp_path: Path) -> None:
    # Scoring retrieval alone would report a list the service does not return.
    from benchmarks._recommend_quality import _rank_dir

    (tmp_path / "train").mkdir()
    with pytest.raises(FileNotFoundError, match="no ranker run beside .*split.parquet"):
        _rank_dir(tmp_path / "train", str(tmp_path / "train" / "split.parquet"))
