"""``recops.report.plots``: curves grouped per panel, and Pareto numbers that never overlap."""

from __future__ import annotations

import io
import itertools
import random
from typing import Any

from PIL import Image
from recops.report.plots import panels, pareto_numbers, place_numbers, plot_pareto

NAMES = [f"variant_{i}" for i in range(13)]


def _crowded_rows(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = [
        {
            "name": name,
            "status": "ok",
            "serves": "saved_model",
            # Within a few thousandths and a few percent: the labels used to overprint.
            "ndcg_at_10": 0.30 + rng.uniform(-0.002, 0.002),
            "p99_ms_b1": 1.0 + rng.uniform(0, 0.05),
            "gzip_bytes": 400_000 + rng.uniform(-5_000, 5_000),
        }
        for name in NAMES
    ]
    rows.append({"name": "broken", "status": "failed", "serves": "saved_model", "ndcg_at_10": None})
    return rows


def test_numbers_follow_the_table_and_skip_rows_without_a_point() -> None:
    rows = _crowded_rows(0)
    assert pareto_numbers(rows) == {name: i for i, name in enumerate(NAMES, start=1)}
    png = plot_pareto(rows, "variant_3")
    assert png is not None
    image = Image.open(io.BytesIO(png))
    image.load()
    assert image.format == "PNG" and image.size[0] > 800
    assert plot_pareto([rows[-1]]) is None


def test_crowded_numbers_never_overlap_each_other() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _crowded_rows(1)
    figure, axis = plt.subplots(figsize=(6, 4.6))
    points = [
        (float(r["p99_ms_b1"]), float(r["ndcg_at_10"]), str(i)) for i, r in enumerate(rows[:-1], 1)
    ]
    axis.scatter([p[0] for p in points], [p[1] for p in points])
    axis.margins(0.12)
    boxes = place_numbers(axis, figure, points)
    plt.close(figure)
    assert len(boxes) == len(points)
    for a, b in itertools.combinations(boxes, 2):
        assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)


def test_validation_curves_share_their_training_twins_panel() -> None:
    series = {k: [(0, 1.0), (1, 0.5)] for k in ("auc", "loss", "val_loss", "val_rmse")}
    assert panels(series) == [["loss", "val_loss"], ["auc"], ["val_rmse"]]
    # Tracked runs prefix each model's keys.
    prefixed = {k: [(0, 1.0), (1, 0.5)] for k in ("rank.loss", "rank.val_loss", "rank.rmse")}
    assert panels(prefixed) == [["rank.loss", "rank.val_loss"], ["rank.rmse"]]
