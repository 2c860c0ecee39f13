"""Unit tests for ``recops.serving.rollout_config``: roll-out and rollback configs."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

_SMOKE = [{"user_id": 1, "country": "fr", "spend": 2.5}]


def test_rollout_config_keeps_the_old_fields_and_checks_the_new_ones() -> None:
    from recops.serving.rollout import RolloutConfig

    old_style = RolloutConfig(
        model_name="m", version=3, saved_model_dir="/x", smoke_instances=_SMOKE
    )
    assert (old_style.label, old_style.canary_label, old_style.keep_versions) == (
        "stable",
        "canary",
        2,
    )
    assert RolloutConfig.from_dict(json.loads(json.dumps(old_style.to_dict()))) == old_style
    assert (old_style.max_score_psi, old_style.min_top_overlap) == (None, None)  # report only
    guarded = dataclasses.replace(old_style, max_score_psi=0.25, min_top_overlap=0.0)
    assert RolloutConfig.from_dict(json.loads(json.dumps(guarded.to_dict()))) == guarded
    bad: list[tuple[dict[str, Any], str]] = [
        ({"canary_label": "stable"}, "canary_label and label"),
        ({"canary_qps": 0.0}, "canary_qps"),
        ({"canary_seconds": -1.0}, "canary_seconds"),
        ({"slo_p99_ms": float("nan")}, "slo_p99_ms"),
        ({"canary_concurrency": 0}, "canary_concurrency"),
        ({"expected_outputs": {"scores": [[1.0], [2.0]]}}, "one value per smoke instance"),
        ({"expected_outputs": {}}, "expected_outputs"),
        ({"parity_atol": -1.0}, "parity_atol"),
        ({"version": 0}, "version"),
        ({"max_score_psi": -0.1}, "max_score_psi"),
        ({"max_score_psi": float("inf")}, "max_score_psi"),
        ({"min_top_overlap": 1.5}, "min_top_overlap"),
    ]
    for change, message in bad:
        fields = {
            "model_name": "m",
            "version": 3,
            "saved_model_dir": "/x",
            "smoke_instances": _SMOKE,
            **change,
        }
        with pytest.raises(ValueError, match=message):
            RolloutConfig(**fields)


def test_rollback_config_checks_its_fields() -> None:
    from recops.serving.rollout import RollbackConfig

    assert RollbackConfig(model_name="m").to_version is None
    with pytest.raises(ValueError, match="to_version"):
        RollbackConfig(model_name="m", to_version=0)
    with pytest.raises(ValueError, match="smoke_instances"):
        RollbackConfig(model_name="m", smoke_instances=[])
    with pytest.raises(ValueError, match="model_name"):
        RollbackConfig(model_name="../etc")


def test_the_service_comparison_travels_with_the_config_and_checks_its_fields() -> None:
    from recops.serving.rollout_config import RolloutConfig, ServiceCanary

    probe = ServiceCanary(url="http://127.0.0.1:8000", dataset="ml-100k", role="ranking",
                          users=["1", "2"])  # fmt: skip
    config = RolloutConfig(
        model_name="m", version=3, saved_model_dir="/x", smoke_instances=_SMOKE, service=probe
    )
    # XCom and result.json carry it as a plain dict; from_dict rebuilds the record.
    again = RolloutConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and isinstance(again.service, ServiceCanary)
    bad: list[tuple[dict[str, Any], str]] = [
        ({"url": "127.0.0.1:8000"}, "want http://host:port"),
        ({"url": "http://h:1/path"}, "want http://host:port"),
        ({"role": "reranker"}, "role"),
        ({"users": []}, "user keys"),
        ({"users": ["1", ""]}, "user keys"),
        ({"k": 0}, "k must be"),
        ({"wait_s": 0.0}, "wait_s"),
        ({"timeout_s": float("inf")}, "timeout_s"),
    ]
    for change, message in bad:
        fields: dict[str, Any] = {"url": "http://h:1", "dataset": "d", "role": "retrieval",
                                  "users": ["1"], **change}  # fmt: skip
        with pytest.raises(ValueError, match=message):
            ServiceCanary(**fields)
