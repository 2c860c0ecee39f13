"""Unit tests for ``recops.serving.loadtest``: the load config and percentiles."""

from __future__ import annotations

from typing import Any

import pytest

_SMOKE = [{"user_id": 1, "country": "fr", "spend": 2.5}]


def test_load_config_checks_its_fields_and_percentiles_interpolate() -> None:
    from recops.serving.loadtest import LoadConfig, percentile

    config = LoadConfig(model="m", instances=_SMOKE, label="stable", qps=200, duration_s=10)
    assert LoadConfig.from_dict(config.to_dict()) == config
    bad: list[tuple[dict[str, Any], str]] = [
        ({"qps": 0}, "qps"),
        ({"duration_s": float("inf")}, "duration_s"),
        ({"concurrency": 0}, "concurrency"),
        ({"protocol": "http2"}, "protocol"),
        ({"label": "stable", "version": 2}, "not both"),
        ({"instances": []}, "instances"),
    ]
    for change, message in bad:
        with pytest.raises(ValueError, match=message):
            LoadConfig(**{"model": "m", "instances": _SMOKE, **change})
    assert percentile([], 99) == 0.0
    assert percentile([5.0], 50) == 5.0
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile(list(reversed(values)), 100) == 100.0
