"""``select_variant``: measure every variant beside the float model and choose one to serve.

``select_variant(SelectConfig) -> SelectResult`` loads every ok variant and the float
baseline in one process, measures size, parameters, latency (interleaved) and load memory
(one subprocess each, side by side), gates on relative NDCG@10 loss and minimises the
objective among SavedModel variants (TF Serving runs SavedModels, not TFLite). It writes
``variants.json``, ``variants.md`` and ``pareto.png``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from recops.compression.footprint import directory_bytes, gzip_bytes, saved_model_params
from recops.compression.latency import load_memories, make_runners, measure_latency
from recops.compression.pareto import markdown_table, plot_pareto
from recops.compression.records import (
    BASELINE,
    QUALITY_K,
    MissingInputError,
    SelectConfig,
    SelectResult,
    VariantResult,
    canonical,
)
from recops.training import (
    CONFIG_FILE,
    RESULT_FILE,
    load_completed,
    prepare_output_dir,
    publish,
)

__all__ = ["select_variant"]

log = logging.getLogger(__name__)


def _read_variant(path: str) -> VariantResult:
    result_path = Path(path) / RESULT_FILE
    if not result_path.is_file():
        return VariantResult(
            variant=Path(path).name, status="failed", reason=f"no {RESULT_FILE} in {path}"
        )
    return VariantResult.from_dict(json.loads(result_path.read_text()))


def select_variant(config: SelectConfig) -> SelectResult:
    """Measure every ok variant beside the float model and choose what to serve.

    Among SavedModel variants (and the float model) whose relative NDCG@10 loss is within
    ``quality_budget``, the lexicographic minimum of ``objective`` wins. TFLite variants
    are measured and tabled (their latency is the TFLite interpreter's) but never served:
    TF Serving runs SavedModels.

    Args:
        config: Variants, baseline, budget and objective.

    Returns:
        The selection; the stored one when ``output_dir`` is already complete.

    Raises:
        MissingInputError: If the float model is missing (a ``FileNotFoundError``).
        ValueError: If ``output_dir`` holds a completed run of another config.
    """
    output_dir = Path(config.output_dir)
    config_dict = canonical(config)
    done = load_completed(output_dir, config_dict)
    if done is not None:
        return SelectResult.from_dict(done)
    train_dir = Path(config.train_dir)
    baseline_dir = train_dir / "model"
    if not baseline_dir.is_dir():
        raise MissingInputError(f"float model not found: {baseline_dir}")
    staging = prepare_output_dir(output_dir, config_dict, backup=None)

    from recops.evaluation import EvalConfig, evaluate

    # The dataset's positive and seen event types, as the variants were scored.
    train_config = json.loads((train_dir / CONFIG_FILE).read_text())
    base_eval = evaluate(
        EvalConfig(model_dir=str(baseline_dir), split_uri=config.split_uri,
                   users_uri=config.users_uri, spec_uri=str(train_config.get("spec_uri", "")),
                   training_set_uri=str(train_config.get("training_set_uri", "")),
                   k=QUALITY_K, split="test")
    )  # fmt: skip
    base_params, base_nonzero = saved_model_params(baseline_dir)
    rows: list[dict[str, Any]] = [
        {
            "name": BASELINE, "status": "ok", "reason": "", "serves": "saved_model",
            "model_dir": str(baseline_dir), "tflite_uri": None,
            "ndcg_at_10": base_eval.ndcg_at_k, "recall_at_10": base_eval.recall_at_k,
            "saved_model_bytes": directory_bytes(baseline_dir),
            "gzip_bytes": gzip_bytes(baseline_dir), "tflite_bytes": None,
            "params": base_params, "nonzero_params": base_nonzero,
            "sparsity": 1.0 - base_nonzero / base_params if base_params else 0.0,
        }
    ]  # fmt: skip
    variants = [_read_variant(path) for path in config.variant_dirs]
    for v in variants:
        rows.append(
            {
                "name": v.variant, "status": v.status, "reason": v.reason, "serves": v.serves,
                "model_dir": v.model_dir, "tflite_uri": v.tflite_uri,
                "ndcg_at_10": v.ndcg_at_10, "recall_at_10": v.recall_at_10,
                "saved_model_bytes": v.saved_model_bytes or None,
                "gzip_bytes": v.gzip_bytes or None, "tflite_bytes": v.tflite_bytes,
                "params": v.params or None, "nonzero_params": v.nonzero_params or None,
                "sparsity": v.sparsity if v.status == "ok" else None,
            }
        )  # fmt: skip
    base_ndcg = base_eval.ndcg_at_k
    for row in rows:
        ndcg = row["ndcg_at_10"]
        row["ndcg_rel_loss"] = (
            (base_ndcg - ndcg) / base_ndcg if ndcg is not None and base_ndcg > 0 else None
        )
        row["within_budget"] = bool(
            row["status"] == "ok"
            and row["ndcg_rel_loss"] is not None
            and row["ndcg_rel_loss"] <= config.quality_budget + 1e-12
        )

    runners = make_runners(rows, train_dir, config.users_uri)
    serving = {r["name"] for r in rows if r["serves"] == "saved_model"}
    # TFLite's interpreter threads would disturb the SavedModel timings: time apart.
    latency = {
        **measure_latency(
            {n: r for n, r in runners.items() if n in serving},
            config.latency_calls,
            config.warmup_calls,
        ),
        **measure_latency(
            {n: r for n, r in runners.items() if n not in serving},
            config.latency_calls,
            config.warmup_calls,
        ),
    }
    for row in rows:
        row.update(latency.get(row["name"], {}))
    probed = {
        r["name"]: r["model_dir"] for r in rows
        if config.measure_memory and r["status"] == "ok" and r["serves"] == "saved_model"
    }  # fmt: skip
    memory = load_memories(list(probed.values()))
    for row in rows:
        row["load_rss_bytes"] = memory[probed[row["name"]]] if row["name"] in probed else None

    selected, reason = _choose(rows, config)
    (staging / "variants.json").write_text(json.dumps(rows, indent=2))
    (staging / "variants.md").write_text(markdown_table(rows))
    plot_pareto([r for r in rows if r["status"] == "ok"], staging / "pareto.png")

    chosen = next(r for r in rows if r["name"] == selected)
    result = SelectResult(
        selected=selected,
        selection_reason=reason,
        model_dir=chosen["model_dir"],
        table_uri=str(output_dir / "variants.json"),
        table_md_uri=str(output_dir / "variants.md"),
        pareto_png_uri=str(output_dir / "pareto.png"),
        selected_metrics=_figures(chosen),
        baseline_metrics=_figures(rows[0]),
        n_variants=len(variants),
        n_failed=sum(v.status != "ok" for v in variants),
    )
    publish(staging, output_dir, ("variants.json", "variants.md", "pareto.png"), result.to_dict())
    log.info("selected %s: %s", selected, reason)
    return result


def _figures(row: Mapping[str, Any]) -> dict[str, Any]:
    keep = ("ndcg_at_10", "recall_at_10", "ndcg_rel_loss", "gzip_bytes",
            "saved_model_bytes", "tflite_bytes", "params", "sparsity", "p50_ms_b1",
            "p99_ms_b1", "rows_per_s_b1", "cpu_p50_ms_b1", "p50_ms_b64", "p99_ms_b64",
            "rows_per_s_b64", "cpu_p50_ms_b64", "load_rss_bytes")  # fmt: skip
    return {key: row.get(key) for key in keep}


def _minimise(
    rows: Sequence[Mapping[str, Any]], keys: Sequence[str], tolerance: float
) -> Mapping[str, Any]:
    """Lexicographic minimum where values within ``tolerance`` of the best tie.

    Each key keeps the rows within ``(1 + tolerance)`` of its best value; the last key
    (then the row order) breaks what ties remain.
    """
    remaining = list(rows)
    for key in keys:
        best = min(float(r[key]) for r in remaining)
        remaining = [r for r in remaining if float(r[key]) <= best * (1 + tolerance) + 1e-12]
    return min(remaining, key=lambda r: tuple(float(r[key]) for key in keys[::-1]))


def _choose(rows: Sequence[Mapping[str, Any]], config: SelectConfig) -> tuple[str, str]:
    """Pick the row to serve and say why."""
    budget = f"{config.quality_budget:.2%}"
    candidates = [
        r for r in rows
        if r["within_budget"] and r["serves"] == "saved_model"
        and all(r.get(key) is not None for key in config.objective)
    ]  # fmt: skip
    variants = [r for r in candidates if r["name"] != BASELINE]
    if not variants:
        over = [
            f"{r['name']} ({r['ndcg_rel_loss']:+.2%})"
            for r in rows
            if r["name"] != BASELINE and r["ndcg_rel_loss"] is not None
            and r["serves"] == "saved_model"
        ]  # fmt: skip
        return BASELINE, (
            f"no SavedModel variant within the {budget} NDCG@10 budget "
            f"(relative losses: {', '.join(over) or 'none measured'}); serving the float model"
        )
    best = _minimise(candidates, config.objective, config.objective_tolerance)
    summary = ", ".join(f"{key}={best[key]:.4g}" for key in config.objective)
    ties = f", values within {config.objective_tolerance:.0%} tied"
    if best["name"] == BASELINE:
        return BASELINE, (
            f"{len(variants)} variant(s) within the {budget} budget, but none beats the "
            f"float model on {'/'.join(config.objective)}{ties} ({summary}); "
            "serving the float model"
        )
    return best["name"], (
        f"{best['name']}: NDCG@10 loss {best['ndcg_rel_loss']:+.2%} within the {budget} "
        f"budget; best of {len(candidates)} within budget (float model included) on "
        f"{'/'.join(config.objective)}{ties} ({summary})"
    )
