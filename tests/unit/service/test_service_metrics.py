"""``recops.service.metrics``: the Prometheus text parses, family by family."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from recops.service.metrics import STAGES, VARIANTS, ServiceMetrics


def test_metrics_text_parses_with_every_family() -> None:
    metrics = ServiceMetrics()
    for stage in STAGES:
        metrics.stage_latency.labels(stage=stage, variant="stable").observe(0.002)
    metrics.stage_latency.labels(stage="retrieval", variant="canary").observe(0.009)
    metrics.requests.labels(route="/v1/recommendations", status="200", variant="stable").inc()
    metrics.latency.labels(route="/v1/recommendations", variant="stable").observe(0.004)
    metrics.requests.labels(route="/healthz", status="200", variant="").inc()
    metrics.errors.labels(kind="unavailable").inc()
    metrics.scores.labels(source="retrieval", variant="stable").observe(0.7)
    metrics.candidate_popularity.observe(12)
    metrics.set_versions({"retrieval": ("r", 3), "ranking": ("k", None)}, 1.0)
    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    counts = {
        (s.labels["stage"], s.labels["variant"]): s.value
        for s in families["recops_service_stage_seconds"].samples
        if s.name.endswith("_count")
    }
    # The canary's observation is a series of its own: stable's figures stay users' own.
    assert counts == {**{(stage, "stable"): 1.0 for stage in STAGES}, ("retrieval", "canary"): 1.0}
    requests = {
        (s.labels["route"], s.labels["variant"])
        for s in families["recops_service_requests"].samples
        if s.name.endswith("_total")
    }
    assert requests == {("/v1/recommendations", "stable"), ("/healthz", "")}
    assert VARIANTS == ("stable", "canary")
    versions = {s.labels["role"]: s.value for s in families["recops_service_model_version"].samples}
    assert versions == {"retrieval": 3.0, "ranking": -1.0}
    errors = families["recops_service_errors"].samples
    assert [(s.labels["kind"], s.value) for s in errors if s.name.endswith("_total")] == [
        ("unavailable", 1.0)
    ]
    # A second registry is independent: two apps in one process never collide.
    assert ServiceMetrics().render() != metrics.render()
