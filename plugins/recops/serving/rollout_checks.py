"""Infra validation of a canary: smoke queries, the load test, parity and the comparison.

``infra_validate`` runs every check on the canary label: LOAD_AND_QUERY (``smoke``: one
ranked list, or one finite score per candidate, per instance), a load test at the
configured rate against the latency SLO, prediction parity with offline outputs
(``parity``), and the comparison with ``stable`` on the same requests: smoke latency,
top-10 overlap (``overlap``) and the PSI of the scores (``score_psi``), reported, and
gates only where the config sets ``max_score_psi`` / ``min_top_overlap``
(``guard_reasons``; here when no recommendation service runs, else on the service's
comparison of many users). A canary that fails raises ``CanaryRejected`` carrying every reason
and what was measured.
``smoke_warmup`` replays a version's first warmup request over gRPC (rollback's smoke).

numpy, TensorFlow and the load generator are imported inside the functions.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recops.errors import RolloutError, ServingError
from recops.serving.rollout_config import SCORES_OUTPUT, TOP_ITEMS_OUTPUT, RolloutConfig

if TYPE_CHECKING:
    from recops.serving.client import ServingClient

__all__ = [
    "CanaryRejected",
    "brief",
    "guard_reasons",
    "infra_validate",
    "overlap",
    "parity",
    "score_psi",
    "smoke_test",
    "smoke_warmup",
    "top_overlap",
]

log = logging.getLogger("recops.serving.rollout")


class CanaryRejected(RolloutError):
    """Infra validation failed: carries every reason and what was measured.

    Caught by the roll-out, which restores the previous config and raises its own
    ``RolloutError`` with these reasons.
    """

    def __init__(self, reasons: list[str], report: dict[str, Any] | None = None) -> None:
        super().__init__("; ".join(reasons), reasons=reasons)
        self.reasons = reasons
        self.report = report or {}


def infra_validate(
    config: RolloutConfig,
    client: ServingClient,
    ranked_length: int | None,
    stable_version: int | None,
) -> tuple[dict[str, Any], tuple[float, list[int]]]:
    """LOAD_AND_QUERY, load, parity and the stable comparison on the canary label.

    Returns the report and the smoke (latency, top ids); raises ``CanaryRejected`` with every
    failed check.
    """
    from recops.serving.loadtest import LoadConfig, run_load

    model, canary = config.model_name, config.canary_label
    report: dict[str, Any] = {}
    try:
        latency_ms, top_items, rows = smoke_test(
            client, model, canary, config.smoke_instances, ranked_length
        )
    except Exception as exc:  # nothing else is worth measuring on a canary that fails this
        raise CanaryRejected(
            [f"LOAD_AND_QUERY: {exc}"], {"load_and_query": f"failed: {exc}"}
        ) from exc
    report["load_and_query"] = "passed"
    reasons: list[str] = []

    if config.canary_seconds > 0:
        load = run_load(
            LoadConfig(
                model=model,
                instances=config.smoke_instances,
                host=client.rest_host,
                rest_port=client.rest_port,
                label=canary,
                qps=config.canary_qps,
                duration_s=config.canary_seconds,
                concurrency=config.canary_concurrency,
                timeout_s=max(5.0, config.slo_p99_ms / 1000.0 * 4),
            )
        )
        report["load"] = load.to_dict()
        if load.errors:
            reasons.append(
                f"LOAD: {load.errors} of {load.sent} requests failed at {config.canary_qps} QPS "
                f"(e.g. {load.error_samples[0] if load.error_samples else '?'})"
            )
        if load.p99_ms > config.slo_p99_ms:
            reasons.append(
                f"LATENCY: p99 {load.p99_ms:.1f} ms exceeds the SLO of {config.slo_p99_ms:.1f} ms "
                f"at {config.canary_qps} QPS"
            )
    else:
        report["load"] = "skipped: canary_seconds is 0"

    if config.expected_outputs is not None:
        problems = parity(rows, config.expected_outputs, config.parity_atol, config.parity_rtol)
        report["parity"] = "passed" if not problems else f"failed: {problems[0]}"
        reasons.extend(f"PARITY: {p}" for p in problems)
    else:
        report["parity"] = "skipped: no expected_outputs given"

    if stable_version is None:
        report["canary_vs_stable"] = "skipped: first roll-out, no previous version"
    else:
        # The same requests on both labels: latency, top-10 overlap and the PSI of the
        # score distributions. Reported; a gate only where the config sets a guard, since
        # a better model moves both.
        try:
            stable_ms, _, stable_rows = smoke_test(
                client, model, config.label, config.smoke_instances, None
            )
        except Exception as exc:  # a stable that fails to answer is not the canary's fault
            report["canary_vs_stable"] = f"unavailable: {exc}"
        else:
            top10, psi = overlap(rows, stable_rows, 10), score_psi(stable_rows, rows)
            report["canary_vs_stable"] = {
                "stable_version": stable_version,
                "top10_overlap": top10,
                "score_psi": psi,
                "smoke_ms": {"canary": round(latency_ms, 3), "stable": round(stable_ms, 3)},
            }
            # The guards judge the comparison closest to users: the service's (many users,
            # the whole served path) when one runs, else these smoke requests.
            if config.service is None:
                reasons.extend(
                    guard_reasons(
                        "MODEL SERVER",
                        psi,
                        top10,
                        10,
                        max_score_psi=config.max_score_psi,
                        min_top_overlap=config.min_top_overlap,
                    )
                )

    if reasons:
        raise CanaryRejected(reasons, report)
    return report, (latency_ms, top_items)


def overlap(a: list[Any], b: list[Any], k: int) -> float:
    """Mean top-``k`` overlap of the ranked ids of two prediction lists.

    A retrieval row ranks its ``item_ids``; a scoring row (a ranker's, sent the same
    candidates on both labels) ranks the candidates' positions by ``scores``.
    """

    def ids(row: Any) -> list[Any]:
        if not isinstance(row, dict):
            return []
        if TOP_ITEMS_OUTPUT in row:
            return list(row[TOP_ITEMS_OUTPUT])
        scores = row.get(SCORES_OUTPUT)
        if not isinstance(scores, list):
            return []
        return sorted(range(len(scores)), key=lambda i: -float(scores[i]))

    return top_overlap([ids(row) for row in a], [ids(row) for row in b], k)


def guard_reasons(
    where: str,
    psi: float | None,
    top_k_overlap: float | None,
    k: int,
    *,
    max_score_psi: float | None,
    min_top_overlap: float | None,
) -> list[str]:
    """The reasons a canary strays too far from ``stable`` (empty: within the guards).

    Args:
        where: Which comparison measured it, for the reason's prefix (``MODEL SERVER``,
            ``SERVICE``).
        psi: The PSI of the canary's scores against stable's (None: not measured).
        top_k_overlap: The mean top-``k`` overlap with stable (None: not measured).
        k: The overlap's ``k``, for the sentence.
        max_score_psi: A PSI above it rejects; None reports only.
        min_top_overlap: An overlap below it rejects; None reports only.
    """
    reasons = []
    if max_score_psi is not None and psi is not None and psi > max_score_psi:
        reasons.append(
            f"{where} SCORE PSI: the canary's score distribution moved from stable's by "
            f"PSI {psi:.4f}, above max_score_psi {max_score_psi:g}"
        )
    if min_top_overlap is not None and top_k_overlap is not None:
        if top_k_overlap < min_top_overlap:
            reasons.append(
                f"{where} TOP-{k} OVERLAP: the canary shares {top_k_overlap:.4f} of stable's "
                f"top-{k} on the same requests, below min_top_overlap {min_top_overlap:g}"
            )
    return reasons


def top_overlap(a: Sequence[Sequence[Any]], b: Sequence[Sequence[Any]], k: int) -> float:
    """Mean share of ``a``'s top-``k`` ids that ``b``'s top-``k`` of the same row holds.

    A row shorter than ``k`` counts against its own length; rows pair up in order.
    """
    shares = []
    for left, right in zip(a, b, strict=False):
        ids_a, ids_b = set(list(left)[:k]), set(list(right)[:k])
        shares.append(len(ids_a & ids_b) / max(1, min(k, len(ids_a) or k)))
    return round(sum(shares) / max(1, len(shares)), 4)


def _scores(rows: list[Any]) -> list[float]:
    """Every finite score of the rows' ``scores`` output (excluded candidates left out)."""
    from recops_models.contract import MASKED_SCORE

    out: list[float] = []
    for row in rows:
        values = row.get(SCORES_OUTPUT, []) if isinstance(row, dict) else []
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, (int, float)) and math.isfinite(value):
                if value > MASKED_SCORE / 2:
                    out.append(float(value))
    return out


def score_psi(stable_rows: list[Any], canary_rows: list[Any]) -> float | None:
    """PSI of the canary's scores against stable's, on stable's deciles (None: no scores)."""
    import pandas as pd

    from recops.validation.drift import psi, weight_bins

    stable, canary = _scores(stable_rows), _scores(canary_rows)
    if not stable or not canary:
        return None
    expected, actual = weight_bins(pd.Series(stable), pd.Series(canary))
    return round(psi(expected, actual), 4)


def parity(
    rows: list[Any], expected: Mapping[str, list[Any]], atol: float, rtol: float
) -> list[str]:
    """Differences between served rows and offline outputs, one sentence per output."""
    import numpy as np

    problems = []
    for name, values in expected.items():
        served = [row.get(name) if isinstance(row, dict) else None for row in rows]
        if any(value is None for value in served):
            problems.append(f"the canary's predictions have no output {name!r}")
            continue
        try:
            got = np.asarray(served, dtype=np.float64)
            want = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            if served != values:
                problems.append(f"output {name!r} differs from the offline values")
            continue
        if got.shape != want.shape:
            problems.append(
                f"output {name!r} has shape {list(got.shape)}, offline {list(want.shape)}"
            )
            continue
        close = np.isclose(got, want, atol=atol, rtol=rtol)
        if not close.all():
            worst = float(np.max(np.abs(got - want)))
            problems.append(
                f"output {name!r}: {int((~close).sum())} of {close.size} values differ from the "
                f"offline ones (max |diff| {worst:.6g}, atol {atol}, rtol {rtol})"
            )
    return problems


def smoke_test(
    client: ServingClient,
    model: str,
    label: str,
    instances: list[dict[str, Any]],
    ranked_length: int | None,
) -> tuple[float, list[int], list[Any]]:
    """Predict ``instances`` on ``label``; expect one ranked id list per instance.

    Returns the latency, the first row's ranked ids and all prediction rows.
    """
    started = time.perf_counter()
    reply = client.predict_rest(model, instances=instances, label=label)
    latency_ms = (time.perf_counter() - started) * 1000.0
    predictions = reply.get("predictions")
    if not isinstance(predictions, list) or len(predictions) != len(instances):
        raise RolloutError(
            f"smoke test: expected {len(instances)} predictions, got {brief(predictions)}"
        )
    rows = []
    for row, instance in zip(predictions, instances, strict=True):
        items = row.get(TOP_ITEMS_OUTPUT) if isinstance(row, dict) else None
        if items is None and isinstance(row, dict) and "item_ids" in instance:
            # A scoring model: one finite score per candidate it was sent.
            scores = row.get(SCORES_OUTPUT)
            if (
                not isinstance(scores, list)
                or len(scores) != len(instance["item_ids"])
                or not all(isinstance(x, int | float) and math.isfinite(x) for x in scores)
            ):
                raise RolloutError(
                    f"smoke test: expected {len(instance['item_ids'])} finite "
                    f"'{SCORES_OUTPUT}', got {brief(row)}"
                )
            rows.append(list(instance["item_ids"]))
            continue
        if not isinstance(items, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in items
        ):
            raise RolloutError(
                f"smoke test: each prediction must hold a list of integer "
                f"'{TOP_ITEMS_OUTPUT}', got {brief(row)}"
            )
        if ranked_length is not None and len(items) != ranked_length:
            raise RolloutError(
                f"smoke test: '{TOP_ITEMS_OUTPUT}' holds {len(items)} ids, the signature "
                f"promises {ranked_length}"
            )
        rows.append(items)
    if not rows[0] or len({len(items) for items in rows}) != 1:
        raise RolloutError("smoke test: ranked lists are empty or of different lengths")
    log.info("smoke test of %s@%s: %d rows in %.1f ms", model, label, len(rows), latency_ms)
    return latency_ms, [int(i) for i in rows[0]], predictions


def brief(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def smoke_warmup(
    client: ServingClient, model: str, label: str, version_dir: Path
) -> tuple[float, list[int]]:
    """Replay the version's first warmup request on ``label`` over gRPC."""
    from recops_models.tf_env import tensorflow

    from recops.serving.servable import WARMUP_FILE

    tf = tensorflow()
    from tensorflow_serving.apis import prediction_log_pb2

    path = version_dir / WARMUP_FILE
    if not path.is_file():
        raise ServingError(
            "FAILED_PRECONDITION", f"{path} is missing: pass smoke_instances to smoke-test"
        )
    first = next(iter(tf.data.TFRecordDataset(str(path)).take(1)), None)
    if first is None:
        raise ServingError("FAILED_PRECONDITION", f"{path} holds no warmup request")
    request = prediction_log_pb2.PredictionLog.FromString(first.numpy()).predict_log.request
    inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
    started = time.perf_counter()
    outputs = client.predict_grpc(
        model,
        inputs,
        label=label,
        signature_name=request.model_spec.signature_name or "serving_default",
    )
    latency_ms = (time.perf_counter() - started) * 1000.0
    ranked = outputs.get(TOP_ITEMS_OUTPUT)
    if ranked is None or ranked.ndim != 2 or ranked.shape[1] == 0:
        raise RolloutError(f"smoke test: no ranked '{TOP_ITEMS_OUTPUT}' in the reply")
    return latency_ms, [int(i) for i in ranked[0]]
