"""The process's role under ``TF_CONFIG``, and the cached strategy."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest
from recops.training.strategy import is_chief, select_strategy, worker_name


def _tf_config(
    monkeypatch: pytest.MonkeyPatch, cluster: Mapping[str, object], task: object
) -> None:
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))


def test_role_without_tf_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert is_chief() and worker_name() == "worker0"


def test_role_under_tf_config(monkeypatch: pytest.MonkeyPatch) -> None:
    workers = {"worker": ["a:1", "b:2"]}
    _tf_config(monkeypatch, workers, {"type": "worker", "index": 0})
    assert is_chief() and worker_name() == "worker0"
    _tf_config(monkeypatch, workers, {"type": "worker", "index": 1})
    assert not is_chief() and worker_name() == "worker1"
    # With a chief in the cluster, worker 0 is not the chief.
    with_chief = {"chief": ["c:0"], **workers}
    _tf_config(monkeypatch, with_chief, {"type": "worker", "index": 0})
    assert not is_chief()
    _tf_config(monkeypatch, with_chief, {"type": "chief", "index": 0})
    assert is_chief() and worker_name() == "chief0"


def test_strategy_is_cached_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
    first, name, replicas = select_strategy(1)
    again, _, _ = select_strategy(1)
    assert again is first and name == "MirroredStrategy" and replicas >= 1
