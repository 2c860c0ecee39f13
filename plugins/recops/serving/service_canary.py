"""The canary through the recommendation service: the same users on ``stable`` and ``canary``.

The model-server checks (``rollout_checks``) ask the canary label with hand-built
requests. This one asks what users get: ``GET /v1/recommendations`` with
``variant=canary`` goes through the whole served path (the user's key, the online
features and history, retrieval, the ranker, the seen filter, the popular fill) with the
canary version in its role and ``stable`` in the other.

``compare_through_service`` first waits for the service to answer with the new version
(it picks the ``canary`` label up on its next state refresh), then asks each user once
per variant, interleaved so that a change in the machine's load hits both alike, and
``compare`` turns the two samples into the report and the reasons to reject:

- errors: any failed canary request (or one answered by another version) rejects;
- latency: the canary's p99 above the SLO rejects; p50 and p99 of both are reported;
- the PSI of the model-sourced scores and the mean top-k overlap are reported, and gate
  only under the roll-out's guards (``max_score_psi``, ``min_top_overlap``; off by
  default): a better model moves both.

Standard library HTTP (``http.client``); the PSI comes from ``rollout_checks``.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from recops.serving.recommend import SOURCE_POPULARITY
from recops.serving.rollout_config import ServiceCanary

__all__ = ["Answer", "compare", "compare_through_service"]

#: How often the service is asked whether it serves the canary yet (seconds).
_POLL_S = 0.25


@dataclass(frozen=True)
class Answer:
    """One recommendations request as the comparison sees it.

    Attributes:
        ok: 200 with a well-formed body.
        latency_ms: Wall time of the request.
        versions: The body's ``model_versions`` (empty when not ok).
        items: The returned item ids, in order.
        scores: The scores of the items the models picked (not the popular fill).
        error: What went wrong, when not ok.
    """

    ok: bool
    latency_ms: float
    versions: dict[str, Any] = field(default_factory=dict)
    items: list[Any] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    error: str = ""


class _Client:
    """One keep-alive connection to the service (reopened after a failure)."""

    def __init__(self, probe: ServiceCanary) -> None:
        parsed = urllib.parse.urlsplit(probe.url)
        self.probe = probe
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self._conn: http.client.HTTPConnection | None = None

    def ask(self, user: str, variant: str) -> Answer:
        query = urllib.parse.urlencode(
            {"user_id": user, "k": self.probe.k, "dataset": self.probe.dataset, "variant": variant}
        )
        begin = time.perf_counter()
        try:
            if self._conn is None:
                self._conn = http.client.HTTPConnection(
                    self.host, self.port, timeout=self.probe.timeout_s
                )
            self._conn.request("GET", f"/v1/recommendations?{query}")
            reply = self._conn.getresponse()
            raw = reply.read()
            latency = (time.perf_counter() - begin) * 1000.0
            if reply.status != 200:
                return Answer(False, latency, error=f"HTTP {reply.status}: {raw[:200]!r}")
            body = json.loads(raw)
            items = body["items"]
            return Answer(
                True,
                latency,
                versions=dict(body["model_versions"]),
                items=[i["item_id"] for i in items],
                scores=[float(i["score"]) for i in items if i.get("source") != SOURCE_POPULARITY],
            )
        except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError) as exc:
            self.close()
            latency = (time.perf_counter() - begin) * 1000.0
            return Answer(False, latency, error=f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def compare_through_service(
    probe: ServiceCanary,
    version: int,
    slo_p99_ms: float,
    *,
    max_score_psi: float | None = None,
    min_top_overlap: float | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Ask the service for ``probe.users`` on both variants; the report and the reasons.

    Args:
        probe: Where the service is and whom to ask.
        version: The version behind ``canary`` (in ``probe.role``).
        slo_p99_ms: The canary's p99 must not exceed it.
        max_score_psi: Guard on the scores' PSI (None: reported only).
        min_top_overlap: Guard on the mean top-k overlap (None: reported only).

    Returns:
        ``(report, reasons)``; the canary is rejected when ``reasons`` is not empty.
    """
    client = _Client(probe)
    try:
        deadline = time.monotonic() + probe.wait_s
        while True:
            first = client.ask(probe.users[0], "canary")
            if first.ok and first.versions.get(probe.role) == version:
                break
            if time.monotonic() >= deadline:
                seen = first.versions if first.ok else first.error
                return {"url": probe.url, "waited_s": probe.wait_s, "last_answer": seen}, [
                    f"SERVICE: {probe.url} did not answer with {probe.role} v{version} behind "
                    f"'canary' within {probe.wait_s:.0f} s (last answer: {seen})"
                ]
            time.sleep(_POLL_S)
        stable: list[Answer] = []
        canary: list[Answer] = []
        for user in probe.users:
            stable.append(client.ask(user, "stable"))
            canary.append(client.ask(user, "canary"))
    finally:
        client.close()
    report, reasons = compare(stable, canary, role=probe.role, version=version, k=probe.k,
                              slo_p99_ms=slo_p99_ms, max_score_psi=max_score_psi,
                              min_top_overlap=min_top_overlap)  # fmt: skip
    return {"url": probe.url, "dataset": probe.dataset, **report}, reasons


def _percentile(values: list[float], q: float) -> float | None:
    """``loadtest.percentile`` rounded to the µs; None (not 0) when nothing answered."""
    from recops.serving.loadtest import percentile

    return round(percentile(values, q), 3) if values else None


def compare(
    stable: list[Answer],
    canary: list[Answer],
    *,
    role: str,
    version: int,
    k: int,
    slo_p99_ms: float,
    max_score_psi: float | None = None,
    min_top_overlap: float | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """The comparison of the same users' answers on both variants.

    Args:
        stable: One answer per user from ``variant=stable``.
        canary: The same users' answers from ``variant=canary``, in the same order.
        role: The canary's role (``retrieval`` or ``ranking``).
        version: The canary version each canary answer must carry in ``role``.
        k: Items asked per answer (the overlap's denominator).
        slo_p99_ms: The canary's p99 limit.
        max_score_psi: Guard: a score PSI above it rejects (None: reported only).
        min_top_overlap: Guard: a mean top-``k`` overlap below it rejects (None:
            reported only).

    Returns:
        ``(report, reasons)``: errors, p50/p99, score PSI and top-k overlap; a reason per
        failed gate (canary errors, a canary answered by another version, p99 over SLO,
        a guard crossed).
    """
    from recops.serving.rollout_checks import guard_reasons, score_psi, top_overlap

    if len(stable) != len(canary):
        raise ValueError(f"{len(stable)} stable answers against {len(canary)} canary answers")
    reasons: list[str] = []
    failed = [a for a in canary if not a.ok]
    other = [a for a in canary if a.ok and a.versions.get(role) != version]
    if failed:
        reasons.append(
            f"SERVICE: {len(failed)} of {len(canary)} canary requests failed "
            f"(e.g. {failed[0].error})"
        )
    if other:
        reasons.append(
            f"SERVICE: {len(other)} of {len(canary)} canary answers came from {role} "
            f"v{other[0].versions.get(role)}, not v{version}"
        )
    latency = {
        name: [a.latency_ms for a in answers if a.ok]
        for name, answers in (("stable", stable), ("canary", canary))
    }
    p99 = _percentile(latency["canary"], 99)
    if p99 is not None and p99 > slo_p99_ms:
        reasons.append(
            f"SERVICE LATENCY: canary p99 {p99:.1f} ms through the service exceeds the SLO "
            f"of {slo_p99_ms:.1f} ms"
        )
    both = [(s, c) for s, c in zip(stable, canary, strict=True) if s.ok and c.ok]
    overlap = (
        top_overlap([s.items for s, _ in both], [c.items for _, c in both], k) if both else None
    )
    psi = score_psi([{"scores": a.scores} for a in stable if a.ok],
                    [{"scores": a.scores} for a in canary if a.ok])  # fmt: skip
    reasons.extend(guard_reasons("SERVICE", psi, overlap, k, max_score_psi=max_score_psi,
                                 min_top_overlap=min_top_overlap))  # fmt: skip
    stable_versions = next((a.versions for a in stable if a.ok), {})
    report = {
        "users": len(canary),
        "versions": {
            "stable": stable_versions,
            "canary": next((a.versions for a in canary if a.ok), {}),
        },
        "errors": {"stable": sum(not a.ok for a in stable), "canary": len(failed)},
        "p50_ms": {n: _percentile(v, 50) for n, v in latency.items()},
        "p99_ms": {n: _percentile(v, 99) for n, v in latency.items()},
        f"top{k}_overlap": overlap,
        "score_psi": psi,
    }
    return report, reasons
