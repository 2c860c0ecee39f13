"""The report's drawn plots, as PNG bytes: the per-epoch training curves and the Pareto plot.

Matplotlib is imported inside the functions (and set to the Agg backend) so importing the
report package stays light.

The Pareto plot is drawn here from the compression table rather than embedding the
selection's own PNG: each point carries a short number instead of its variant name, the
numbers are placed where they overlap neither another number nor a point, and the page's
variant table lists every number beside its name and figures.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "MAX_PANELS",
    "pareto_numbers",
    "pareto_rows",
    "place_numbers",
    "plot_history",
    "plot_pareto",
    "panels",
]

#: Per-epoch panels per model at most (the first ones by ``panels``' order).
MAX_PANELS = 4

Series = Sequence[tuple[int, float]]


def _twin(key: str) -> str:
    """The validation twin of a metric key: ``loss`` -> ``val_loss``, ``rank.loss`` ->
    ``rank.val_loss`` (the tracked runs prefix each model's keys)."""
    head, dot, tail = key.rpartition(".")
    return f"{head}{dot}val_{tail}"


def panels(series: Mapping[str, Series]) -> list[list[str]]:
    """Group a model's metric keys into panels: ``x`` beside ``val_x``, loss first."""
    twins = {_twin(k) for k in series if _twin(k) in series}
    out = [[k, _twin(k)] if _twin(k) in series else [k] for k in sorted(series) if k not in twins]
    out.sort(key=lambda group: (0 if "loss" in group[0] else 1, group[0]))
    return out[:MAX_PANELS]


def plot_history(
    history: Mapping[str, Mapping[str, Series]], best_epochs: Mapping[str, Any] | None = None
) -> bytes:
    """One row per model, one panel per metric (validation beside training); PNG bytes.

    Args:
        history: ``{model: {metric: [(epoch, value), ...]}}``.
        best_epochs: ``{model: epoch}`` of the kept weights, marked with a dashed line.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    best_epochs = best_epochs or {}
    models = [m for m in history if history[m]]
    layout = {m: panels(history[m]) for m in models}
    columns = max(len(p) for p in layout.values())
    figure, axes = plt.subplots(
        len(models), columns, figsize=(4.6 * columns, 3.1 * len(models)), squeeze=False
    )
    for row, model in enumerate(models):
        series = history[model]
        best = best_epochs.get(model)
        for col in range(columns):
            axis = axes[row][col]
            if col >= len(layout[model]):
                axis.set_visible(False)
                continue
            for key, colour in zip(layout[model][col], ("tab:blue", "tab:orange"), strict=False):
                steps = [s for s, _ in series[key]]
                values = [v for _, v in series[key]]
                axis.plot(steps, values, marker="o", markersize=3, color=colour, label=key)
            if isinstance(best, int) and not isinstance(best, bool):
                axis.axvline(best, color="tab:red", linestyle="--", linewidth=1, label="kept")
            axis.set_title(f"{model}: {layout[model][col][0]}", fontsize=10)
            axis.set_xlabel("epoch")
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
            axis.grid(alpha=0.3)
            axis.legend(loc="best", fontsize=7)
    figure.tight_layout()
    return _png(figure, plt)


def pareto_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The table's rows that have a point on the plot (measured, with a quality)."""
    return [
        r
        for r in rows
        if r.get("status") == "ok" and r.get("ndcg_at_10") and r.get("serves") is not None
    ]


def pareto_numbers(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """``{variant name: number}`` as the plot and the variant table show them (1-based)."""
    return {str(r.get("name")): i for i, r in enumerate(pareto_rows(rows), start=1)}


def _front(points: Sequence[tuple[float, float]]) -> set[int]:
    """Indices no other point dominates, for (quality up, cost down)."""
    return {
        i
        for i, (q, c) in enumerate(points)
        if not any(
            q2 >= q and c2 <= c and (q2 > q or c2 < c)
            for j, (q2, c2) in enumerate(points)
            if j != i
        )
    }


#: Offsets (points) tried in turn for a number, nearest first.
_OFFSETS = tuple(
    (dx * r, dy * r)
    for r in (7, 13, 20, 28)
    for dx, dy in ((1, 1), (1, -1), (-1, 1), (-1, -1), (0, 1.3), (0, -1.3), (1.3, 0), (-1.3, 0))
)


def place_numbers(
    axis: Any, figure: Any, placed: Sequence[tuple[float, float, str]]
) -> list[tuple[float, float, float, float]]:
    """Write each ``(x, y, text)`` at the first offset whose box overlaps nothing drawn.

    Returns:
        The numbers' boxes in display coordinates (``x0, y0, x1, y1``), in order.
    """
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    taken: list[tuple[float, float, float, float]] = []
    # Points are obstacles too: a number never hides a marker.
    for x, y, _ in placed:
        px, py = axis.transData.transform((x, y))
        taken.append((px - 4, py - 4, px + 4, py + 4))
    frame = axis.get_window_extent(renderer)
    for x, y, text in placed:
        chosen = None
        for dx, dy in _OFFSETS:
            label = axis.annotate(
                text,
                (x, y),
                xytext=(dx, dy),
                textcoords="offset points",
                fontsize=8,
                ha="center",
                va="center",
                arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.6} if abs(dx) > 8 else None,
            )
            box = label.get_window_extent(renderer)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0
            clash = any(
                box.x0 < t[2] and t[0] < box.x1 and box.y0 < t[3] and t[1] < box.y1 for t in taken
            )
            if inside and box.y1 <= frame.y1 and not clash:
                chosen = box
                break
            label.remove()
        if chosen is None:  # crowded beyond every offset: the nearest, still numbered
            label = axis.annotate(
                text, (x, y), xytext=(7, 7), textcoords="offset points", fontsize=8
            )
            chosen = label.get_window_extent(renderer)
        taken.append((chosen.x0, chosen.y0, chosen.x1, chosen.y1))
    return taken[len(placed) :]


def plot_pareto(rows: Sequence[Mapping[str, Any]], selected: str | None = None) -> bytes | None:
    """NDCG@10 vs p99 latency and vs size, each variant a numbered point; PNG bytes.

    SavedModel variants (what TF Serving serves) are circles, red on the Pareto front,
    the served one ringed; TFLite edge artifacts are grey triangles. Returns None when
    no row has a point.
    """
    shown = pareto_rows(rows)
    if not shown:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    numbers = pareto_numbers(rows)
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    to_place = []
    for axis, key, edge_key, label in (
        (axes[0], "p99_ms_b1", "p99_ms_b1", "p99 latency, batch 1 (ms)"),
        (axes[1], "gzip_bytes", "tflite_bytes", "gzip SavedModel / TFLite size (kB)"),
    ):
        serving = [r for r in shown if r["serves"] == "saved_model" and r.get(key)]
        points = [(float(r["ndcg_at_10"]), float(r[key])) for r in serving]
        front = _front(points)
        placed = []
        for i, (row, (ndcg, cost)) in enumerate(zip(serving, points, strict=True)):
            axis.scatter(cost, ndcg, s=36, zorder=3, c="tab:red" if i in front else "tab:blue")
            if row.get("name") == selected:
                axis.scatter(cost, ndcg, s=150, zorder=2, facecolors="none", edgecolors="black")
            placed.append((cost, ndcg, str(numbers[str(row["name"])])))
        ordered = sorted((points[i] for i in front), key=lambda p: p[1])
        if len(ordered) > 1:
            axis.plot([p[1] for p in ordered], [p[0] for p in ordered], "r--", lw=1, zorder=1)
        for row in shown:
            if row["serves"] == "tflite" and row.get(edge_key):
                cost, ndcg = float(row[edge_key]), float(row["ndcg_at_10"])
                axis.scatter(cost, ndcg, s=36, c="tab:gray", marker="^", zorder=3)
                placed.append((cost, ndcg, str(numbers[str(row["name"])])))
        costs = [x for x, _, _ in placed]
        if key == "gzip_bytes":
            axis.xaxis.set_major_formatter(
                matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1024:,.0f}")
            )
        elif costs and min(costs) > 0 and max(costs) / min(costs) > 20:
            # Latencies spanning decades read on a log axis; a narrow range on a linear one
            # (a log axis over less than a decade shows one tick or none).
            axis.set_xscale("log")
            axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            label = label.replace("(ms)", "(ms, log)")
        axis.margins(0.12)
        axis.set_xlabel(label)
        axis.set_ylabel("NDCG@10 (test)")
        axis.grid(alpha=0.3)
        to_place.append((axis, placed))
    axes[0].set_title("quality vs latency", fontsize=10)
    axes[1].set_title("quality vs size", fontsize=10)
    figure.suptitle(
        "numbers: the variant table's # · red: Pareto front (SavedModel) · "
        "grey ▲: TFLite edge · ring: served",
        fontsize=9,
    )
    # Lay the figure out first: numbers are placed in its final display coordinates.
    figure.tight_layout()
    for axis, placed in to_place:
        place_numbers(axis, figure, placed)
    return _png(figure, plt)


def _png(figure: Any, plt: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=96)
    plt.close(figure)
    return buffer.getvalue()
