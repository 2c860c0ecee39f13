"""The selection's outputs for people: the Pareto front, its plot and the Markdown table.

matplotlib is imported only inside ``plot_pareto``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from recops.compression.records import BASELINE

__all__ = ["markdown_table", "pareto_front", "plot_pareto"]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points no other point dominates, for (quality up, cost down).

    A point dominates another when its quality is >= and its cost <=, one strictly.
    """
    front = []
    for i, (quality, cost) in enumerate(points):
        dominated = any(
            q >= quality and c <= cost and (q > quality or c < cost)
            for j, (q, c) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


def plot_pareto(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Two panels, NDCG@10 vs p99 at batch 1 and vs size; front over SavedModel rows.

    TFLite rows are drawn apart (grey triangles, their interpreter latency and
    flatbuffer size): they are edge artifacts, not candidates for TF Serving.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    for axis, key, edge_key, label in (
        (axes[0], "p99_ms_b1", "p99_ms_b1", "p99 latency, batch 1 (ms)"),
        (axes[1], "gzip_bytes", "tflite_bytes", "gzip SavedModel / TFLite size"),
    ):
        serving = [
            r
            for r in rows
            if r["serves"] == "saved_model" and r.get(key) is not None and r["ndcg_at_10"]
        ]
        points = [(float(r["ndcg_at_10"]), float(r[key])) for r in serving]
        front = set(pareto_front(points))
        for i, (row, (ndcg, cost)) in enumerate(zip(serving, points, strict=True)):
            colour = "tab:red" if i in front else "tab:blue"
            marker = "s" if row["name"] == BASELINE else "o"
            axis.scatter(cost, ndcg, c=colour, marker=marker, zorder=3)
            axis.annotate(row["name"], (cost, ndcg), fontsize=7, xytext=(3, 3),
                          textcoords="offset points")  # fmt: skip
        ordered = sorted((points[i] for i in front), key=lambda p: p[1])
        if ordered:
            axis.plot([p[1] for p in ordered], [p[0] for p in ordered], "r--", lw=1, zorder=2)
        for row in rows:
            if row["serves"] == "tflite" and row.get(edge_key) and row["ndcg_at_10"]:
                cost, ndcg = float(row[edge_key]), float(row["ndcg_at_10"])
                axis.scatter(cost, ndcg, c="tab:gray", marker="^", zorder=3)
                axis.annotate(f"{row['name']} (tflite)", (cost, ndcg), fontsize=7,
                              color="tab:gray", xytext=(3, -9),
                              textcoords="offset points")  # fmt: skip
        if key == "gzip_bytes":
            # Sizes span well under a decade: a linear axis in kB reads better than log.
            axis.xaxis.set_major_formatter(
                matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1e3:.0f} kB")
            )
        else:
            axis.set_xscale("log")
            # Minor-tick labels on a narrow log range overprint each other; majors suffice.
            axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.set_xlabel(label)
        axis.set_ylabel("NDCG@10 (test)")
        axis.grid(alpha=0.3)
    axes[0].set_title("quality vs latency (red: SavedModel Pareto front)")
    axes[1].set_title("quality vs size (red: SavedModel Pareto front)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


_TABLE_COLUMNS = (
    "name", "status", "serves", "ndcg_at_10", "ndcg_rel_loss", "recall_at_10", "gzip_bytes",
    "saved_model_bytes", "tflite_bytes", "params", "sparsity", "p50_ms_b1", "p99_ms_b1",
    "rows_per_s_b1", "cpu_p50_ms_b1", "p99_ms_b64", "rows_per_s_b64", "load_rss_bytes",
    "within_budget",
)  # fmt: skip


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The selection table as Markdown, failed variants and their reasons listed below."""

    def cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    lines = [
        "| " + " | ".join(_TABLE_COLUMNS) + " |",
        "|" + "---|" * len(_TABLE_COLUMNS),
    ]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in _TABLE_COLUMNS) + " |" for r in rows]
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        lines += ["", "Failed variants:", ""]
        lines += [f"- {r['name']}: {r['reason']}" for r in failed]
    return "\n".join(lines) + "\n"
