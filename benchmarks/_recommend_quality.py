"""The quality part of ``benchmarks.recommend``: issue #17's figures, scored as served.

Two holdouts, both replayed through a retrieval SavedModel's ``serving_default`` with
each user's known history (``recops.served_eval``), beside popularity (a trailing window)
and EASE on the same cut. Where a ranker serves, the list the service returns is the
ranker's policy applied to those candidates: under ``fusion``, the reciprocal-rank
fusion of both orders (``recops.evaluation.evaluate_rerank``, the nightly's own
re-rank evaluation, with the same history), so that list is scored too and the targets
are checked on it:

- **the served model** (RecBole's protocol when the nightly trained on ``random``): the
  SavedModel the model server holds behind ``stable``, re-scored now on the holdout of
  the run that trained it (its ``result.json``). The figures the registry holds for that
  version (``recops.metric.*`` tags, from the nightly's evaluate) stand beside them: the
  two must agree, or what is served is not what was measured.
- **the temporal cut**: the served run's own training config (same data, knobs and
  history length), with only the protocol set to ``temporal``, trained into ``--workdir``
  (reused by a re-run) and replayed the same way: the history before each user's cut,
  the user's later events the truth. With a served ranker, its run's config is trained on
  that cut too, and the nightly's rule (``choose_policy``) picks the list.

The targets (issue #17) are checked here: the seen share is 0, the temporal figures are
at least popularity's and EASE's, and the served model's Recall@10 / NDCG@10 stay at or
above the bar (the goal is printed beside).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

#: Issue #17: the served model's RecBole-protocol figures must stay at or above the bar.
BAR = {"recall_at_10": 0.265, "ndcg_at_10": 0.307}
#: ...and the goal, EASE's measured figures beaten.
GOAL = {"recall_at_10": 0.28, "ndcg_at_10": 0.34}
METRICS = ("recall_at_10", "ndcg_at_10")


def _train_dir(model_dir: Path) -> Path:
    """The training run's folder (``config.json``, ``result.json``) above a SavedModel."""
    for folder in (model_dir, *model_dir.parents):
        if (folder / "config.json").is_file() and (folder / "result.json").is_file():
            return folder
    raise FileNotFoundError(f"no training run (config.json, result.json) above {model_dir}")


def _scored(config: Any) -> dict[str, Any]:
    """``evaluate_served`` as rows: the model's and each baseline's Recall / NDCG@10."""
    from recops.served_eval import evaluate_served

    from benchmarks.datasets import _served_baseline

    started = time.perf_counter()
    got = evaluate_served(config)
    rows = [
        {
            "model": "two-tower (serving_default)",
            "recall_at_10": got.recall_at_k,
            "ndcg_at_10": got.ndcg_at_k,
            "n_users": got.n_users,
        },
        *(
            {"model": f"{name} (same cut)", **_served_baseline(figures)}
            for name, figures in got.baselines.items()
        ),
    ]
    return {
        "rows": rows,
        "seen_share": got.seen_share,
        "history_input": got.history_input,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _beats_baselines(part: dict[str, Any]) -> dict[str, bool]:
    """Per metric: the list users get is at least every scored baseline's."""
    model = part["users_get"]
    baselines = [row for row in part["rows"] if row["model"].endswith("(same cut)")]
    return {
        metric: all(model[metric] >= row[metric] for row in baselines if metric in row)
        for metric in METRICS
    }


def _rank_dir(train_dir: Path, split_uri: str) -> Path:
    """The ranker run beside ``train_dir`` trained on its split.

    Raises:
        FileNotFoundError: No such run: the list a serving ranker gives cannot be scored,
            and scoring retrieval's alone would report a list users do not get.
    """
    for folder in sorted(train_dir.parent.glob("rank-*")):
        config = folder / "config.json"
        if config.is_file() and json.loads(config.read_text()).get("split_uri") == split_uri:
            return folder
    raise FileNotFoundError(f"a ranker serves, but no ranker run beside {train_dir} "
                            f"trained on its split {split_uri}")  # fmt: skip


def _fused(
    config: Any, ranker_features_uri: str, retrieval_dir: str, ranker_dir: str, split_uri: str
) -> dict[str, Any]:
    """The fused list's row: retrieval's top 100 re-ordered by RRF with the ranker's.

    ``config`` is the retrieval run's ``TrainConfig`` (users, spec, training set);
    ``ranker_features_uri`` the ranker's context features (its run's training set).
    """
    from recops.evaluation import RerankConfig, evaluate_rerank

    got = evaluate_rerank(
        RerankConfig(
            retrieval_model_dir=retrieval_dir,
            ranker_model_dir=ranker_dir,
            split_uri=split_uri,
            users_uri=config.users_uri,
            spec_uri=config.spec_uri,
            training_set_uri=config.training_set_uri,
            user_features_uri=ranker_features_uri,
            rerank_by="fusion",
        )
    )
    return {
        "model": "two-tower + ranker, fused (RRF)",
        "recall_at_10": got.recall_at_k,
        "ndcg_at_10": got.ndcg_at_k,
        "n_users": got.n_users,
    }


def _users_get(part: dict[str, Any], policy: str | None) -> dict[str, Any]:
    """The row of the list the service returns under ``policy`` (None: no ranker)."""
    return part["rows"][1] if policy == "fusion" else part["rows"][0]


def registered_figures(settings: Any, version: int) -> dict[str, float]:
    """The figures the registry holds for ``version`` (its ``recops.metric.*`` tags)."""
    from recops.registry import mlflow_client
    from recops.registry_tags import METRIC_TAG_PREFIX

    tags = mlflow_client(settings).get_model_version(settings.model_name, str(version)).tags
    return {
        key[len(METRIC_TAG_PREFIX) :]: float(value)
        for key, value in tags.items()
        if key.startswith(METRIC_TAG_PREFIX)
    }


def quality_section(
    models: dict[str, Any],
    workdir: Path,
    *,
    history_max: int,
    registered: dict[str, float],
) -> dict[str, Any]:
    """Score the served model on its run's holdout and its config on the temporal cut.

    Args:
        models: ``find_models``' answer: the served version and its SavedModel folders.
        workdir: Where the temporal run trains, in a folder named after the served run's
            (kept, and reused by a re-run on the same state).
        history_max: The online history's cap (``Settings.history_max``).
        registered: ``registered_figures`` of the served version.

    Returns:
        The JSON-able section: both parts' rows, the registry's figures, the checks.
    """
    from recops.ranking import RankerConfig, train_ranker
    from recops.served_eval import ServedEvalConfig
    from recops.serving.recommend import choose_policy
    from recops.training import TrainConfig, train

    train_dir = _train_dir(Path(models["float_dir"]))
    config = TrainConfig.from_dict(json.loads((train_dir / "config.json").read_text()))
    result = json.loads((train_dir / "result.json").read_text())
    ranker = models.get("ranker")
    rank_dir = _rank_dir(train_dir, result["split_uri"]) if ranker else None
    rank_config = (
        RankerConfig.from_dict(json.loads((rank_dir / "config.json").read_text()))
        if rank_dir
        else None
    )

    def served_config(model_dir: str, split_uri: str) -> ServedEvalConfig:
        return ServedEvalConfig(
            model_dir=model_dir,
            split_uri=split_uri,
            users_uri=config.users_uri,
            training_set_uri=config.training_set_uri,
            spec_uri=config.spec_uri,
            history_max=history_max,
        )

    print(f"  served v{models['version']} ({result['protocol']} holdout), as served:", flush=True)
    served = _scored(served_config(str(models["served_dir"]), result["split_uri"]))
    policy = None
    if ranker and rank_config is not None:
        # The ranker that serves, on the candidates of the retriever that serves.
        served["rows"].insert(
            1,
            _fused(config, rank_config.training_set_uri, str(models["served_dir"]),
                   str(ranker["served_dir"]), result["split_uri"]),
        )  # fmt: skip
        policy = str(ranker["policy"])
        served["ranker"] = {"version": ranker["version"], "policy": policy}
    served["users_get"] = _users_get(served, policy)
    served["protocol"] = result["protocol"]
    served["version"] = models["version"]
    served["registered"] = {
        "recall_at_10": registered.get("served.recall_at_10"),
        "ndcg_at_10": registered.get("served.ndcg_at_10"),
        "offline_recall_at_10": registered.get("recall_at_10"),
        "offline_ndcg_at_10": registered.get("ndcg_at_10"),
        "fused_recall_at_10": registered.get("reranked.recall_at_10"),
        "fused_ndcg_at_10": registered.get("reranked.ndcg_at_10"),
    }
    model = served["users_get"]
    served["checks"] = {
        "seen_share_zero": served["seen_share"] == 0.0,
        **{f"{m}_at_or_above_bar": model[m] >= BAR[m] for m in METRICS},
        **{f"{m}_at_or_above_goal": model[m] >= GOAL[m] for m in METRICS},
    }

    print("  the served run's config on the temporal cut (trains once):", flush=True)
    temporal_config = TrainConfig.from_dict(
        {
            **config.to_dict(),
            "protocol": "temporal",
            "output_dir": str(workdir / f"temporal-{train_dir.name}"),
        }
    )
    started = time.perf_counter()
    trained = train(temporal_config)
    temporal = _scored(served_config(trained.model_dir, trained.split_uri))
    temporal["train_seconds"] = round(time.perf_counter() - started - temporal["seconds"], 1)
    temporal_policy = None
    if rank_config is not None and rank_dir is not None:
        # The served ranker's run config on the same cut, on the temporal retriever's split.
        ranked = train_ranker(
            RankerConfig.from_dict(
                {
                    **rank_config.to_dict(),
                    "protocol": "temporal",
                    "split_uri": trained.split_uri,
                    "output_dir": str(workdir / f"temporal-{rank_dir.name}"),
                }
            )
        )
        fused = _fused(config, rank_config.training_set_uri, trained.model_dir,
                       ranked.model_dir, trained.split_uri)  # fmt: skip
        temporal["rows"].insert(1, fused)
        temporal_policy = choose_policy(temporal["rows"][0], fused)
        temporal["ranker"] = {"policy": temporal_policy}
    temporal["users_get"] = _users_get(temporal, temporal_policy)
    temporal["checks"] = {
        "seen_share_zero": temporal["seen_share"] == 0.0,
        **{f"{m}_at_least_baselines": ok for m, ok in _beats_baselines(temporal).items()},
    }
    for name, part in (("served", served), ("temporal", temporal)):
        for row in part["rows"]:
            figures = (
                f"{row['recall_at_10']:.4f} / {row['ndcg_at_10']:.4f}"
                if "recall_at_10" in row
                else f"skipped ({row['skipped']})"
            )
            print(f"    {name}: {row['model']}: Recall@10 / NDCG@10 {figures}", flush=True)
        print(f"    {name}: seen share {part['seen_share']}", flush=True)
    return {
        "served": served,
        "temporal": temporal,
        "bar": BAR,
        "goal": GOAL,
        "history_max": history_max,
    }


def _cells(row: dict[str, Any]) -> str:
    if "recall_at_10" not in row:
        return f"| {row['model']} | skipped: {row['skipped']} | | |"
    return f"| {row['model']} | {row['recall_at_10']:.4f} | {row['ndcg_at_10']:.4f} | " \
           f"{row['n_users']} |"  # fmt: skip


def _mark(ok: bool) -> str:
    return "met" if ok else "**not met**"


def quality_markdown(section: dict[str, Any] | None) -> list[str]:
    """The two holdouts' tables and the targets, as Markdown lines."""
    if not section:
        return ["## Quality as served", "", "Not measured in this run (`--skip-quality`).", ""]
    served, temporal = section["served"], section["temporal"]
    reg = served["registered"]
    model = served["users_get"]
    lines = [
        "## Quality as served",
        "",
        f"Each list is what the retrieval SavedModel's `serving_default` returns, given the "
        f"user's profile and known history (at most {section['history_max']} items, the "
        "online history's cap), with no masking by the evaluator. Where a ranker serves, "
        "the fused row re-orders those 100 candidates by reciprocal-rank fusion with the "
        "ranker's order (the nightly's re-rank evaluation, same history); the targets are "
        "checked on the list the service returns under the ranker's policy.",
        "",
        f"### The served model: v{served['version']} behind `stable`, on its run's "
        f"{served['protocol']} holdout",
        "",
        "| model | Recall@10 | NDCG@10 | users |",
        "| --- | --- | --- | --- |",
        *(_cells(row) for row in served["rows"]),
        "",
        f"Seen share: {served['seen_share']} ({_mark(served['checks']['seen_share_zero'])}: 0). "
        f"The registry's figures for this version (the nightly's evaluate): as served "
        f"{_fmt(reg['recall_at_10'])} / {_fmt(reg['ndcg_at_10'])}, offline proxy "
        f"{_fmt(reg['offline_recall_at_10'])} / {_fmt(reg['offline_ndcg_at_10'])}, fused "
        f"{_fmt(reg['fused_recall_at_10'])} / {_fmt(reg['fused_ndcg_at_10'])}.",
        "",
        _returns(served),
        "",
        f"Bar {section['bar']['recall_at_10']} / {section['bar']['ndcg_at_10']}: Recall "
        f"{_mark(served['checks']['recall_at_10_at_or_above_bar'])}, NDCG "
        f"{_mark(served['checks']['ndcg_at_10_at_or_above_bar'])}. Goal "
        f"{section['goal']['recall_at_10']} / {section['goal']['ndcg_at_10']}: Recall "
        f"{_mark(served['checks']['recall_at_10_at_or_above_goal'])}, NDCG "
        f"{_mark(served['checks']['ndcg_at_10_at_or_above_goal'])} "
        f"({model['recall_at_10']:.4f} / {model['ndcg_at_10']:.4f}).",
        "",
        "### The same config on the temporal cut (history before the cut, later events the truth)",
        "",
        "| model | Recall@10 | NDCG@10 | users |",
        "| --- | --- | --- | --- |",
        *(_cells(row) for row in temporal["rows"]),
        "",
        _returns(temporal),
        "",
        f"Seen share: {temporal['seen_share']} "
        f"({_mark(temporal['checks']['seen_share_zero'])}: 0). At least popularity and EASE: "
        f"Recall {_mark(temporal['checks']['recall_at_10_at_least_baselines'])}, NDCG "
        f"{_mark(temporal['checks']['ndcg_at_10_at_least_baselines'])}. "
        f"Trained in {temporal['train_seconds']} s.",
        "",
    ]
    return lines


def _returns(part: dict[str, Any]) -> str:
    """Which list the service returns on this cut, and its figures."""
    got = part["users_get"]
    figures = f"{got['recall_at_10']:.4f} / {got['ndcg_at_10']:.4f}"
    ranker = part.get("ranker")
    if not ranker:
        return f"The service returns the retrieval order (no ranker serves): {figures}."
    whose = f"ranker v{ranker['version']}'s recorded" if "version" in ranker else "the nightly's"
    return f"The service returns the `{ranker['policy']}` list ({whose} policy): {figures}."


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"
