"""The Pareto front keeps undominated points; the Markdown table lists failures."""

from __future__ import annotations

from typing import Any

from recops.compression.pareto import markdown_table, pareto_front


def test_pareto_front_keeps_only_undominated_points() -> None:
    # (quality, cost): b dominates d; a, b, c trade off.
    points = [(0.30, 10.0), (0.28, 5.0), (0.20, 1.0), (0.27, 6.0), (0.30, 12.0)]
    assert pareto_front(points) == [0, 1, 2]


def test_markdown_table_formats_cells_and_lists_failed_variants() -> None:
    rows: list[dict[str, Any]] = [
        {"name": "float", "status": "ok", "ndcg_at_10": 0.123456, "params": 10},
        {"name": "broken", "status": "failed", "reason": "ParamError: boom"},
    ]
    lines = markdown_table(rows).splitlines()
    assert lines[0].startswith("| name | status | serves | ndcg_at_10 |")
    assert lines[2].startswith("| float | ok |  | 0.1235 |")
    assert lines[-1] == "- broken: ParamError: boom"
