"""The promotion gate: TFX-Evaluator-style value and change thresholds on a candidate's
metrics, judged against the champion's.

``GateConfig`` builds the checks (floors on Recall/NDCG@10 offline and as served, no
already-seen item served, bounded drops overall and per segment, plus any ``extra``
``Threshold``); ``evaluate_gate`` applies them and leaves a reason for every check. No
MLflow here: ``recops.registry`` stores the decision on the registered version.
"""

from __future__ import annotations

from dataclasses import dataclass

from recops.config import SERVED_PREFIX
from recops.params import stage_default
from recops.records import Record

__all__ = [
    "GATED_METRICS",
    "GATED_SEGMENTS",
    "GateConfig",
    "Threshold",
    "evaluate_gate",
]

#: Metrics the gate compares; higher is better for all of them.
GATED_METRICS = ("recall_at_10", "ndcg_at_10")


@dataclass(frozen=True, kw_only=True)
class Threshold(Record):
    """One gate check on one metric, as TFX's Evaluator words them.

    Attributes:
        metric: Metric name; segment metrics are ``<segment>.<metric>``
            (``cold_users.ndcg_at_10``).
        lower: Value threshold: the candidate must reach at least this.
        upper: Value threshold: the candidate must stay at or below this.
        max_relative_change: Change threshold vs the champion, as a fraction of the
            champion's value, in the bad direction (0.02 = may get 2 % worse).
        max_absolute_change: The same, in the metric's own units.
        higher_is_better: Direction of the change thresholds.
        optional: Skip (and say so) when the metric is missing, instead of failing.
    """

    metric: str
    lower: float | None = None
    upper: float | None = None
    max_relative_change: float | None = None
    max_absolute_change: float | None = None
    higher_is_better: bool = True
    optional: bool = False


#: Segments the gate guards beside the overall metrics (see recops.evaluation).
GATED_SEGMENTS = ("cold_users", "long_tail")


@dataclass(frozen=True, kw_only=True)
class GateConfig(Record):
    """The promotion gate: value thresholds plus change thresholds vs the champion.

    The three scalar fields build the default checks (floors on Recall/NDCG@10, a bounded
    relative drop overall); ``segment_max_relative_drop`` bounds the drop on each segment
    in ``GATED_SEGMENTS``; ``extra`` adds any other :class:`Threshold`.

    Attributes:
        min_recall_at_10: Value threshold on Recall@10.
        min_ndcg_at_10: Value threshold on NDCG@10.
        max_relative_drop: Largest allowed relative drop of each gated metric vs the
            current champion (0.02 = 2 %). Skipped, and said so, when there is none.
        segment_max_relative_drop: The same bound for segment metrics, which are
            noisier (fewer users), so looser by default.
        extra: More thresholds, checked after the default ones.
        kind: ``retrieval`` (the default checks plus ``extra``) or ``ranking`` (only
            ``extra``: a ranker is judged on its own metrics, e.g. RMSE).
    """

    min_recall_at_10: float = stage_default("gate", "min_recall_at_10")
    min_ndcg_at_10: float = stage_default("gate", "min_ndcg_at_10")
    max_relative_drop: float = stage_default("gate", "max_relative_drop")
    segment_max_relative_drop: float = 0.05
    extra: tuple[Threshold, ...] = ()
    kind: str = "retrieval"

    def thresholds(self) -> list[Threshold]:
        """Every check this gate runs, defaults first (none for a ``ranking`` gate)."""
        extra = [Threshold.from_dict(t) if isinstance(t, dict) else t for t in self.extra]
        if self.kind == "ranking":
            return extra
        if self.kind != "retrieval":
            raise ValueError(f"GateConfig.kind={self.kind!r}: expected 'retrieval' or 'ranking'")
        checks = [
            Threshold(
                metric="recall_at_10",
                lower=self.min_recall_at_10,
                max_relative_change=self.max_relative_drop,
            ),
            Threshold(
                metric="ndcg_at_10",
                lower=self.min_ndcg_at_10,
                max_relative_change=self.max_relative_drop,
            ),
        ]
        # The figures of the list as served (recops.served_eval): floors and change
        # bounds as for the offline proxy, and no already-seen item in the top 10.
        # Optional so a registration without them (an external model) still gates.
        for name, floor in (
            ("recall_at_10", self.min_recall_at_10),
            ("ndcg_at_10", self.min_ndcg_at_10),
        ):
            checks.append(
                Threshold(
                    metric=f"{SERVED_PREFIX}{name}",
                    lower=floor,
                    max_relative_change=self.max_relative_drop,
                    optional=True,
                )
            )
        checks.append(Threshold(metric=f"{SERVED_PREFIX}seen_share", upper=0.0, optional=True))
        for segment in GATED_SEGMENTS:
            for name in GATED_METRICS:
                checks.append(
                    Threshold(
                        metric=f"{segment}.{name}",
                        max_relative_change=self.segment_max_relative_drop,
                        optional=True,
                    )
                )
        return checks + extra


def _check_value(t: Threshold, value: float) -> tuple[bool, list[str]]:
    out: list[str] = []
    ok = True
    if t.lower is not None:
        passed = value >= t.lower
        ok &= passed
        out.append(f"{t.metric}={value:.4f} {'>=' if passed else '<'} floor {t.lower}")
    if t.upper is not None:
        passed = value <= t.upper
        ok &= passed
        out.append(f"{t.metric}={value:.4f} {'<=' if passed else '>'} ceiling {t.upper}")
    return ok, out


def _check_change(t: Threshold, value: float, base: float) -> tuple[bool, list[str]]:
    # Positive "worse" means the candidate moved in the bad direction.
    worse = (base - value) if t.higher_is_better else (value - base)
    out: list[str] = []
    ok = True
    if t.max_absolute_change is not None:
        passed = worse <= t.max_absolute_change
        ok &= passed
        out.append(
            f"{t.metric}={value:.4f} vs champion {base:.4f}: absolute drop {worse:+.4f} "
            f"{'<=' if passed else '>'} {t.max_absolute_change}"
        )
    if t.max_relative_change is not None:
        if base == 0:
            out.append(f"{t.metric}: champion value is 0, relative change threshold skipped")
        else:
            drop = worse / abs(base)
            passed = drop <= t.max_relative_change
            ok &= passed
            out.append(
                f"{t.metric}={value:.4f} vs champion {base:.4f}: relative drop {drop:+.2%} "
                f"{'<=' if passed else '>'} {t.max_relative_change:.2%}"
            )
    return ok, out


def evaluate_gate(
    metrics: dict[str, float], gate: GateConfig, champion: dict[str, float] | None
) -> tuple[bool, list[str]]:
    """Apply value and change thresholds; every check leaves a reason.

    Args:
        metrics: The candidate's metrics (segment metrics as ``<segment>.<metric>``).
        gate: Thresholds.
        champion: The champion's metrics on the same holdout, or None when there is no
            champion yet ("no baseline": change thresholds are skipped, and said so).

    Returns:
        ``(blessed, reasons)``.

    Raises:
        KeyError: A required (non-optional) metric is missing from ``metrics``.
    """
    reasons: list[str] = []
    ok = True
    checks = gate.thresholds()
    for t in checks:
        if t.metric not in metrics:
            if t.optional:
                reasons.append(f"{t.metric}: not measured, skipped")
                continue
            raise KeyError(f"metric {t.metric!r} missing from {sorted(metrics)}")
        passed, said = _check_value(t, float(metrics[t.metric]))
        ok &= passed
        reasons.extend(said)
    if champion is None:
        reasons.append("no baseline: no champion yet, change thresholds skipped")
        return ok, reasons
    for t in checks:
        if t.max_relative_change is None and t.max_absolute_change is None:
            continue
        if t.metric not in metrics:
            continue
        base = champion.get(t.metric)
        if base is None:
            reasons.append(f"{t.metric}: champion has no value, change threshold skipped")
            continue
        passed, said = _check_change(t, float(metrics[t.metric]), float(base))
        ok &= passed
        reasons.extend(said)
    return ok, reasons
