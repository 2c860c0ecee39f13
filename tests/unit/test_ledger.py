"""Alias ledger, promotion lock and the segment-aware gate, on real MLflow (SQLite)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from recops.config import Settings
from recops.ledger import history, ledger_url, promotion_lock, set_alias
from recops.registry import (
    CHAMPION,
    GateConfig,
    RegisterConfig,
    Threshold,
    evaluate_gate,
    register,
)

from tests.support.contract_model import export_contract_model

GOOD = {
    "recall_at_10": 0.2,
    "ndcg_at_10": 0.3,
    "cold_users.ndcg_at_10": 0.2,
    "cold_users.recall_at_10": 0.15,
}


def test_gate_guards_segments_and_extra_thresholds() -> None:
    champ = dict(GOOD)
    # Overall metrics are flat, but cold users lost 20 %: the segment check blocks it.
    worse_cold = {**GOOD, "cold_users.ndcg_at_10": 0.16}
    ok, reasons = evaluate_gate(worse_cold, GateConfig(), champ)
    assert not ok
    assert any(r.startswith("cold_users.ndcg_at_10") and "> 5.00%" in r for r in reasons)
    # Segments not measured are skipped, and the reason says so.
    ok, reasons = evaluate_gate({"recall_at_10": 0.2, "ndcg_at_10": 0.3}, GateConfig(), champ)
    assert ok and any("long_tail.ndcg_at_10: not measured, skipped" == r for r in reasons)
    # A lower-is-better metric with an absolute change threshold.
    gate = GateConfig(
        extra=(
            Threshold(metric="p99_ms", upper=50.0, max_absolute_change=5.0, higher_is_better=False),
        )
    )
    ok, reasons = evaluate_gate({**GOOD, "p99_ms": 20.0}, gate, {**champ, "p99_ms": 10.0})
    assert not ok and any("p99_ms" in r and "absolute drop +10.0000 > 5.0" in r for r in reasons)
    with pytest.raises(KeyError, match="p99_ms"):
        evaluate_gate(GOOD, gate, None)


def test_every_alias_move_is_in_the_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    monkeypatch.setenv("RECOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RECOPS_ACTOR", "test-suite")
    settings = Settings.from_env()
    model = export_contract_model(tmp_path / "sm")
    v1 = register(RegisterConfig(model_dir=str(model), model_key="a", metrics=GOOD, run_name="r1"))
    v2 = register(RegisterConfig(model_dir=str(model), model_key="b", metrics=GOOD, run_name="r2"))
    assert (v1.version, v2.version) == (1, 2) and v2.champion_version == 2
    # The baseline note says where the champion's numbers came from.
    assert any("not re-scored" in r for r in v2.reasons)

    client = mlflow.MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    assert (
        set_alias(
            client, settings, model="recops_retrieval", alias=CHAMPION, version=2, reason="same"
        )
        is None
    )
    entry = set_alias(
        client,
        settings,
        model="recops_retrieval",
        alias=CHAMPION,
        version=1,
        reason="manual rollback",
        source="cli",
    )
    assert entry is not None and (entry.from_version, entry.to_version) == (2, 1)

    rows = history(settings, "recops_retrieval")
    moves = [(r.alias, r.from_version, r.to_version, r.source) for r in rows]
    assert moves == [
        (CHAMPION, 2, 1, "cli"),
        (CHAMPION, 1, 2, "register"),
        ("challenger", 1, 2, "register"),
        (CHAMPION, None, 1, "register"),
        ("challenger", None, 1, "register"),
    ]
    assert all(r.actor == "test-suite" for r in rows)
    assert rows[0].reason == "manual rollback"
    # The ledger shares MLflow's SQLite file: one database holds registry and history.
    assert ledger_url(settings) == settings.mlflow_tracking_uri


def test_promotion_lock_serializes(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    inside: list[int] = []
    overlaps: list[int] = []

    def worker(i: int) -> None:
        with promotion_lock(settings, "m"):
            inside.append(i)
            if len(inside) > 1:
                overlaps.append(i)
            time.sleep(0.05)
            inside.remove(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == []
