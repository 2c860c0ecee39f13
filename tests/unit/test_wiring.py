"""recops.wiring: what the DAG files share comes from the package's declarations."""

from __future__ import annotations

import pendulum
import pytest
from recops import params, wiring


def test_default_args_retry_with_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECOPS_RETRY_DELAY_SECONDS", "3")
    args = wiring.default_args()
    assert args["retries"] == 2 and args["retry_exponential_backoff"] is True
    assert args["retry_delay"] == pendulum.duration(seconds=3)


def test_gpu_queue_is_a_deployment_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECOPS_GPU_QUEUE", raising=False)
    assert wiring.gpu_queue() == "gpu"
    monkeypatch.setenv("RECOPS_GPU_QUEUE", "a100")
    assert wiring.gpu_queue() == "a100"


def test_params_are_the_declared_knobs(monkeypatch: pytest.MonkeyPatch) -> None:
    assert set(wiring.nightly_params()) == set(params.NIGHTLY_DEFAULTS)
    assert set(wiring.replay_params()) == set(params.REPLAY_SCHEMAS)
    monkeypatch.setenv("RECOPS_MODEL_NAME", "shop_retrieval")
    monkeypatch.setenv("RECOPS_RANKING_MODEL_NAME", "shop_ranking")
    promote = wiring.promote_params()
    assert promote["model_name"].value == "shop_retrieval"
    assert promote["model_name"].schema["enum"] == ["shop_retrieval", "shop_ranking"]
    watched = wiring.champion_moved()
    assert watched.uri == "recops://registry/shop_retrieval/champion"
    assert watched.watchers[0].trigger.model_name == "shop_retrieval"
