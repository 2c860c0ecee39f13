"""Prometheus metrics of the recommendation service, on a registry of its own.

A registry per app (not the process-global default) so two apps in one process (tests,
a benchmark) never collide on metric names, and ``/metrics`` shows this service alone.

The request, stage and score series carry a ``variant`` label (``stable`` or ``canary``;
empty on routes other than the recommendations), so the canary traffic of a roll-out
(``?variant=canary``) never blurs the latency and score distributions users get, and a
dashboard can set one beside the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["CONTENT_TYPE", "STAGES", "VARIANTS", "ServiceMetrics", "Variant"]

#: What ``/metrics`` answers with (Prometheus text format 0.0.4).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: The timed stages of one recommendation, in the order they run.
STAGES = ("key", "features", "history", "retrieval", "ranking", "attributes")
#: Which served versions answer a recommendation: the query's ``variant``.
Variant = Literal["stable", "canary"]
VARIANTS: tuple[str, ...] = get_args(Variant)
#: Sub-millisecond to a second: the budget is a 10 ms p99.
_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
_POPULARITY_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)


class ServiceMetrics:
    """The service's counters and histograms; ``render()`` is the ``/metrics`` body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "recops_service_requests", "HTTP requests by route, status and variant.",
            ["route", "status", "variant"], registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "recops_service_request_seconds", "HTTP request latency by route and variant.",
            ["route", "variant"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.stage_latency = Histogram(
            "recops_service_stage_seconds", "Latency of each stage of a recommendation.",
            ["stage", "variant"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.errors = Counter("recops_service_errors", "Errors by kind.", ["kind"], registry=r)
        self.model_version = Gauge(
            "recops_service_model_version", "The stable version each served role answers with.",
            ["role", "model"], registry=r,
        )  # fmt: skip
        self.scores = Histogram(
            "recops_service_score", "Scores of the returned items, by source and variant.",
            ["source", "variant"],
            buckets=(-1.0, -0.5, 0.0, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 100.0, 1000.0), registry=r,
        )  # fmt: skip
        self.candidate_popularity = Histogram(
            "recops_service_candidate_popularity",
            "Positive events in the published data of each returned item.",
            buckets=_POPULARITY_BUCKETS, registry=r,
        )  # fmt: skip
        self.events = Counter(
            "recops_service_events_accepted", "Events accepted by POST /v1/events.", registry=r
        )
        self.state_age = Gauge(
            "recops_service_state_loaded_timestamp_seconds",
            "When the cached served state was last loaded (unix time).", registry=r,
        )  # fmt: skip

    def set_versions(self, models: Mapping[str, tuple[str, int | None]], loaded_at: float) -> None:
        """Record the served versions: role -> (model name, version or None)."""
        self.model_version.clear()
        for role, (name, version) in models.items():
            self.model_version.labels(role=role, model=name).set(
                float(version) if version is not None else -1.0
            )
        self.state_age.set(loaded_at)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
