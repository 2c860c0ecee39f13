"""The promotion gate: floors, change bounds, served figures, and a reason for every check."""

from __future__ import annotations

import pytest
from recops.gate import GateConfig, evaluate_gate


def test_gate_first_run_says_no_baseline() -> None:
    ok, reasons = evaluate_gate({"recall_at_10": 0.2, "ndcg_at_10": 0.3}, GateConfig(), None)
    assert ok
    assert any("no baseline" in r for r in reasons)


def test_gate_floors_and_change_thresholds() -> None:
    gate = GateConfig(min_recall_at_10=0.1, min_ndcg_at_10=0.1, max_relative_drop=0.05)
    ok, reasons = evaluate_gate({"recall_at_10": 0.05, "ndcg_at_10": 0.3}, gate, None)
    assert not ok and any("recall_at_10=0.0500 < floor 0.1" in r for r in reasons)
    champ = {"recall_at_10": 0.2, "ndcg_at_10": 0.3}
    ok, _ = evaluate_gate({"recall_at_10": 0.195, "ndcg_at_10": 0.29}, gate, champ)
    assert ok  # within 5 %
    ok, reasons = evaluate_gate({"recall_at_10": 0.2, "ndcg_at_10": 0.25}, gate, champ)
    assert not ok and any("ndcg_at_10" in r and "> 5.00%" in r for r in reasons)
    with pytest.raises(KeyError, match="ndcg_at_10"):
        evaluate_gate({"recall_at_10": 0.2}, gate, None)


def test_gate_judges_the_served_figures_and_refuses_seen_items() -> None:
    gate = GateConfig(min_recall_at_10=0.1, min_ndcg_at_10=0.1, max_relative_drop=0.05)
    offline = {"recall_at_10": 0.3, "ndcg_at_10": 0.3}
    # The offline proxy passes; the list as served (seen items not excluded) does not.
    served = {"served.recall_at_10": 0.08, "served.ndcg_at_10": 0.2, "served.seen_share": 0.8}
    ok, reasons = evaluate_gate({**offline, **served}, gate, None)
    assert not ok
    assert any("served.recall_at_10=0.0800 < floor 0.1" in r for r in reasons), reasons
    assert any(r.startswith("served.seen_share") and "ceiling" in r for r in reasons), reasons
    clean = {"served.recall_at_10": 0.3, "served.ndcg_at_10": 0.3, "served.seen_share": 0.0}
    assert evaluate_gate({**offline, **clean}, gate, None)[0]
    # Against a champion, the served figures are held to the same change bound.
    worse = {**clean, "served.ndcg_at_10": 0.2}
    ok, reasons = evaluate_gate({**offline, **worse}, gate, {**offline, **clean})
    assert not ok and any("served.ndcg_at_10" in r and "> 5.00%" in r for r in reasons)
    # A registration without served figures (an external model) says it skipped them.
    ok, reasons = evaluate_gate(offline, gate, None)
    assert ok and any(r == "served.recall_at_10: not measured, skipped" for r in reasons)
