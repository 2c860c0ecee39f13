"""The seven sections of a run report, each rendered from the gathered run data.

Each renderer takes ``gather``'s dict and returns ``(html, had_data)``; a section without
data says what is missing instead of being left out.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from recops.config import SERVED_PREFIX
from recops.links import feast_ui_url
from recops.report.markup import (
    Raw,
    badge,
    bullets,
    esc,
    facts_table,
    fmt_kb,
    fmt_num,
    html_table,
    img,
    kpi,
    link,
    note,
)
from recops.report.plots import pareto_numbers, plot_history, plot_pareto

__all__ = [
    "OVERALL_METRICS",
    "SECTION_RENDERERS",
    "champion_of",
    "change",
    "compression_section",
    "feast_service_url",
    "features_section",
    "gate_section",
    "metrics_section",
    "rollout_section",
    "training_section",
    "validation_section",
]

#: Overall metrics in the order people read them.
OVERALL_METRICS = ("recall_at_10", "ndcg_at_10", "hit_at_10", "mrr_at_10", "precision_at_10")


def validation_section(data: dict[str, Any]) -> tuple[str, bool]:
    """The GX validation result: KPIs, drift, warnings and failed checks."""
    report = data["validation"]
    if not report:
        return note("No validation report was logged to this run."), False
    tables = report.get("tables") or {}
    failed_checks = [c for c in report.get("expectations") or [] if not c.get("success")]
    out = [
        '<div class="kpis">',
        kpi("result", badge(bool(report.get("success")), "passed", "failed")),
        kpi("partition", esc(report.get("partition_date"))),
        kpi("rows", esc(fmt_num((tables.get("interactions") or {}).get("n_rows")))),
        kpi("expectations", esc(fmt_num(report.get("n_expectations")))),
        kpi("failed", esc(fmt_num(report.get("n_failed")))),
        kpi("warnings", esc(fmt_num(report.get("n_warnings", len(report.get("warnings") or []))))),
        "</div>",
    ]
    drift = report.get("drift") or {}
    if drift:
        out.append("<h3>Drift and volume</h3>")
        out.append(
            html_table(
                ("metric", "value"), [(k, fmt_num(v)) for k, v in sorted(drift.items())], "narrow"
            )
        )
    if report.get("warnings"):
        out.append("<h3>Warnings</h3>" + bullets(report["warnings"], "warn"))
    if failed_checks:
        out.append("<h3>Checks that did not pass</h3>")
        out.append(
            html_table(
                ("table", "check", "severity", "observed"),
                [
                    (
                        c.get("table"),
                        c.get("expectation_type"),
                        c.get("severity"),
                        json.dumps(c.get("observed_value"), default=str)[:200],
                    )
                    for c in failed_checks
                ],
            )
        )
    if report.get("notes"):
        out.append("<h3>Notes</h3>" + bullets(report["notes"]))
    return "".join(out), True


def features_section(data: dict[str, Any]) -> tuple[str, bool]:
    """The feature services each model used and their features; fingerprints."""
    inputs, lineage = data["inputs"], data["lineage"]
    services = inputs.get("feature_services") or lineage.get("feature_services") or {}
    refs = inputs.get("feature_refs") or {}
    if not services:
        return note("No feature services were recorded for this run."), False
    project = data.get("feast_project")
    rows = []
    for model, service in services.items():
        if not service:
            continue
        names = refs.get(service)
        shown = link(feast_service_url(project, service), service) if project else service
        rows.append((model, shown, ", ".join(names) if names else "(feature names not recorded)"))
    out = [html_table(("model", "feature service", "features (view:feature)"), rows)]
    if project:
        out.append(
            "<p>In the Feast UI: "
            + link(f"{feast_ui_url()}/p/{project}/lineage", "lineage")
            + " (each feature service links the model versions trained on it).</p>"
        )
    facts = [
        ("features as of", inputs.get("features_as_of") or lineage.get("features_as_of")),
        ("training rows", fmt_num(inputs.get("training_rows"))),
        ("feature fingerprint", lineage.get("features_fingerprint")),
        ("training set sha256", str(lineage.get("training_set_sha256") or "")[:16]),
    ]
    out.append(facts_table(facts))
    return "".join(out), True


def training_section(data: dict[str, Any]) -> tuple[str, bool]:
    """The per-epoch curves of both models and the retrieval and ranker training facts."""
    train = data["inputs"].get("train") or {}
    ranker = data["inputs"].get("ranker") or {}
    lineage_train = data["lineage"].get("train_config") or {}
    history = data["history"]
    out = []
    if history:
        best = {
            "two-tower": train.get("best_epoch", lineage_train.get("best_epoch")),
            "ranker (DCN-v2)": ranker.get("best_epoch"),
        }
        out.append(img(plot_history(history, best), "per-epoch training curves"))
    else:
        out.append(
            note(
                "No per-epoch history was recorded for this run: neither the train and rank "
                "tasks' MLflow runs nor their results hold one."
            )
        )
    facts = [
        (
            "strategy",
            f"{train.get('strategy') or lineage_train.get('strategy') or '?'} × "
            f"{fmt_num(train.get('replicas') or lineage_train.get('replicas'))}",
        ),
        ("epochs run", fmt_num(train.get("epochs_run"))),
        ("best epoch", fmt_num(train.get("best_epoch", lineage_train.get("best_epoch")))),
        ("final loss", fmt_num(train.get("final_loss"))),
        ("seconds / epoch", fmt_num(train.get("seconds_per_epoch"), 2)),
        ("examples / s", fmt_num(train.get("examples_per_s"), 0)),
        (
            "train rows · users · items",
            f"{fmt_num(train.get('train_rows'))} · {fmt_num(train.get('n_users'))} · "
            f"{fmt_num(train.get('n_items'))}",
        ),
        ("protocol", train.get("protocol") or lineage_train.get("protocol")),
    ]
    out.append(facts_table(facts, "retrieval training (two-tower)"))
    if any(v is not None for v in ranker.values()):
        out.append(
            facts_table(
                [(k.replace("_", " "), fmt_num(v)) for k, v in ranker.items()], "ranker (DCN-v2)"
            )
        )
    return "".join(out), bool(history or train)


def change(value: Any, base: Any) -> str:
    """Relative change of ``value`` over ``base`` as a signed percentage, or "–"."""
    if value is None or base is None or not float(base):
        return "–"
    return f"{(float(value) - float(base)) / abs(float(base)):+.2%}"


def _served_table(scored: dict[str, float], base: dict[str, float], who: str) -> str:
    """The list as served beside the offline proxy and the baselines on the same cut."""
    served = f"{SERVED_PREFIX}recall_at_10"
    if served not in scored:
        return note("No served-path figures were logged for this run.")
    rows = [
        (
            m,
            fmt_num(scored.get(f"{SERVED_PREFIX}{m}")),
            fmt_num(scored.get(m)),
            fmt_num(scored.get(f"{SERVED_PREFIX}popularity.{m}")),
            fmt_num(scored.get(f"{SERVED_PREFIX}ease.{m}")),
            *([fmt_num(base.get(f"{SERVED_PREFIX}{m}"))] if base else []),
        )
        for m in ("recall_at_10", "ndcg_at_10")
    ]
    headers = (
        "metric",
        "as served",
        "offline proxy",
        "popularity",
        "EASE",
        *([who] if base else []),
    )
    share = scored.get(f"{SERVED_PREFIX}seen_share")
    beyond = scored.get(f"{SERVED_PREFIX}seen_share_beyond_history")
    older = (
        " Items seen before the history window the service holds (RECOPS_HISTORY_MAX; "
        f"by design, not gated): {float(beyond):.2%}."
        if beyond
        else ""
    )
    return (
        "<h3>As served (the serving signature, with each user's known history)</h3>"
        + html_table(headers, rows, "served")
        + note(
            "Already-seen items in the served top-10: "
            + ("not measured" if share is None else f"{float(share):.2%}")
            + "."
            + older
            + " The gate judges the served figures; the offline proxy masks seen items "
            "itself and stands beside them."
        )
    )


def champion_of(data: dict[str, Any]) -> tuple[dict[str, float], str, str]:
    """``(metrics, label, note)`` of the champion this run's candidate is compared with.

    The metrics are empty when there is nothing to compare with: no champion yet, or the
    champion is this very version (a re-run that found its model already registered and
    promoted): a model is never compared with itself.
    """
    champion = data["inputs"].get("champion") or {}
    version = champion.get("version")
    base: dict[str, float] = champion.get("metrics") or {}
    candidate = (data.get("version") or {}).get("version")
    if version is None or not base:
        return {}, "champion", "No champion yet: this is the first model, nothing to compare with."
    if candidate is not None and int(version) == int(candidate):
        return (
            {},
            "champion",
            f"This run's model is the champion itself (v{version}): there is no other "
            "champion to compare it with.",
        )
    who = f"champion v{version}"
    return base, who, f"The {who} was re-scored on this run's test split in the same task."


def metrics_section(data: dict[str, Any]) -> tuple[str, bool]:
    """Candidate vs champion on the test split: overall, by segment, re-ranked."""
    metrics: dict[str, float] = dict(data.get("metrics") or {})
    scored = {k: v for k, v in metrics.items() if not k.startswith("train.")}
    if not scored:
        return note("No evaluation metrics were recorded for this run."), False
    base, who, said = champion_of(data)
    out = [note(said), "<h3>Overall (test split, k=10)</h3>"]
    compared = ("metric", "candidate", who, "change") if base else ("metric", "candidate")
    out.append(
        html_table(
            compared,
            [
                (
                    m,
                    fmt_num(scored.get(m)),
                    *((fmt_num(base.get(m)), change(scored.get(m), base.get(m))) if base else ()),
                )
                for m in OVERALL_METRICS
                if m in scored
            ],
        )
    )
    out.append(_served_table(scored, base, who))
    segments = sorted(
        {
            k.split(".", 1)[0]
            for k in scored
            if "." in k and not k.startswith(("reranked.", SERVED_PREFIX))
        }
    )
    if segments:
        out.append("<h3>Segments</h3>")
        rows = []
        for seg in segments:
            for name in ("recall_at_10", "ndcg_at_10"):
                key = f"{seg}.{name}"
                if key in scored:
                    rows.append(
                        (
                            seg,
                            name,
                            fmt_num(scored[key]),
                            *(
                                (fmt_num(base.get(key)), change(scored[key], base.get(key)))
                                if base
                                else ()
                            ),
                        )
                    )
        out.append(html_table(("segment", *compared), rows, "segments"))
    reranked = {
        k.removeprefix("reranked."): v
        for k, v in scored.items()
        if k.startswith("reranked.") and "." not in k.removeprefix("reranked.")
    }
    if reranked:
        policy = (data["inputs"].get("selection") or {}).get("rerank_policy")
        out.append("<h3>Retrieval → DCN-v2 re-rank</h3>")
        out.append(
            html_table(
                ("metric", "retrieval", "re-ranked"),
                [
                    (m, fmt_num(scored.get(m)), fmt_num(reranked.get(m)))
                    for m in OVERALL_METRICS
                    if m in reranked
                ],
            )
        )
        if policy:
            out.append(note(f"Serving policy chosen on this holdout: {policy}."))
    return "".join(out), True


def compression_section(data: dict[str, Any]) -> tuple[str, bool]:
    """The compression variants, their Pareto plot (numbered points) and the one served."""
    rows = data["variants"]
    logged_pareto = data["pareto"]
    if not rows and not logged_pareto:
        return note("No compression search was recorded for this run."), False
    selection = data["inputs"].get("selection") or {}
    selected = selection.get("selected") or data["lineage"].get("compression")
    reason = selection.get("selection_reason") or data["lineage"].get("selection_reason")
    out = []
    if selected:
        out.append(f"<p>Served variant: <strong>{esc(selected)}</strong>. {esc(reason or '')}</p>")
    # Drawn from the table, so its numbers match the table's "#" column; the selection's
    # own PNG (names written beside the points) only when there is no table.
    pareto = plot_pareto(rows, selected) if rows else None
    if pareto or logged_pareto:
        out.append(
            img(
                pareto or logged_pareto,
                "compression Pareto plot: NDCG@10 vs p99 latency and vs size",
            )
        )
    if rows:
        numbers = pareto_numbers(rows)
        table = []
        for r in rows:
            name = (
                Raw(f"<strong>{esc(r.get('name'))} ★</strong>")
                if r.get("name") == selected
                else r.get("name")
            )
            table.append(
                (
                    numbers.get(str(r.get("name")), ""),
                    name,
                    r.get("status"),
                    r.get("serves"),
                    fmt_num(r.get("ndcg_at_10")),
                    fmt_num(r.get("recall_at_10")),
                    "–" if r.get("ndcg_rel_loss") is None else f"{float(r['ndcg_rel_loss']):+.2%}",
                    fmt_kb(r.get("saved_model_bytes")),
                    fmt_kb(r.get("gzip_bytes")),
                    fmt_kb(r.get("tflite_bytes")),
                    fmt_num(r.get("p50_ms_b1"), 2),
                    fmt_num(r.get("p99_ms_b1"), 2),
                    fmt_num(r.get("p99_ms_b64"), 2),
                    fmt_num(r.get("sparsity"), 2),
                    r.get("reason") or "",
                )
            )
        out.append(
            html_table(
                (
                    "#",
                    "variant",
                    "status",
                    "serves",
                    "NDCG@10",
                    "Recall@10",
                    "NDCG loss",
                    "SavedModel kB",
                    "gzip kB",
                    "TFLite kB",
                    "p50 b1 ms",
                    "p99 b1 ms",
                    "p99 b64 ms",
                    "sparsity",
                    "note",
                ),
                table,
                "variants",
            )
        )
    return "".join(out), True


def _reused_note(model: dict[str, Any], recorded: dict[str, Any]) -> str:
    """What the page says of a version this run found already registered."""
    version = model.get("version") or {}
    label = f"{version.get('name', recorded.get('model_name'))} v{version.get('version', '?')}"
    decided = recorded.get("blessed")
    return (
        f"This run registered no new version: {label}, an identical model (same model key), "
        f"was registered by Airflow run {model.get('owner') or '?'}, whose gate decided it"
        + (" (blessed)." if decided else " (not blessed)." if decided is False else ".")
        + " That run's report holds its gate reasons."
    )


def gate_section(data: dict[str, Any]) -> tuple[str, bool]:
    """The gate decision (blessed or not, with reasons) of each model this run registered."""
    registered = data["inputs"].get("registered") or {}
    gate = data["gate"]
    model = data.get("model") or {}
    out = []
    if gate is None and model.get("run") is not None and not model.get("own"):
        out.append(note(_reused_note(model, registered.get("retrieval") or {})))
    elif gate is None:
        return note("No gate decision was recorded for this run."), False
    else:
        version = data["version"]
        label = f"{version['name']} v{version['version']}" if version else "retrieval model"
        out += [
            f"<h3>{esc(label)} {badge(bool(gate.get('blessed')), 'blessed', 'not blessed')}</h3>",
            bullets(gate.get("reasons") or [], "reasons"),
        ]
    ranking = data["ranking"]
    if ranking and ranking.get("gate") is not None:
        rv = ranking["version"]
        rlabel = f"{rv['name']} v{rv['version']}" if rv else "ranker"
        out.append(
            f"<h3>{esc(rlabel)} "
            f"{badge(bool(ranking['gate'].get('blessed')), 'blessed', 'not blessed')}</h3>"
        )
        out.append(bullets(ranking["gate"].get("reasons") or [], "reasons"))
    elif ranking and not ranking.get("own"):
        out.append(note(_reused_note(ranking, registered.get("ranking") or {})))
    return "".join(out), True


def rollout_section(data: dict[str, Any]) -> tuple[str, bool]:
    """Each promotion outcome recorded for the run's models."""
    rollouts = data["rollouts"]
    if not rollouts:
        return note(
            "Not rolled out yet: recsys_promote has not served a version from this run."
        ), False
    out = []
    for r in rollouts:
        outcome = str(r.get("outcome") or "?")
        ok = outcome in ("promoted", "already-serving")
        out.append(
            f"<h3>{esc(r.get('model_name'))} v{esc(r.get('version'))} "
            f"{badge(ok, outcome, outcome)}</h3>"
        )
        infra = r.get("infra_validation") or {}
        load = infra.get("load") if isinstance(infra.get("load"), dict) else {}
        facts = [
            (
                "previous stable",
                r.get("previous_version")
                if r.get("previous_version") is not None
                else "none (first roll-out)",
            ),
            (
                "labels now",
                ", ".join(f"{k}→v{v}" for k, v in sorted((r.get("labels") or {}).items())) or "–",
            ),
            ("served versions", ", ".join(f"v{v}" for v in r.get("served_versions") or []) or "–"),
            ("load and query", infra.get("load_and_query", "–")),
            ("parity with offline scores", infra.get("parity", "–")),
            ("recorded", r.get("recorded_at", "–")),
        ]
        if load:
            facts[3:3] = [
                (
                    "canary p50 / p99 (ms)",
                    f"{fmt_num(load.get('p50_ms'), 1)} / {fmt_num(load.get('p99_ms'), 1)}",
                ),
                (
                    "canary requests · errors",
                    f"{fmt_num(load.get('sent'))} · {fmt_num(load.get('errors'))}",
                ),
                (
                    "canary QPS (target / achieved)",
                    f"{fmt_num(load.get('target_qps'), 1)} / "
                    f"{fmt_num(load.get('achieved_qps'), 1)}",
                ),
            ]
        elif isinstance(infra.get("load"), str):
            facts.insert(3, ("canary load test", infra["load"]))
        vs = infra.get("canary_vs_stable")
        if isinstance(vs, dict):
            facts.append(
                (
                    "top-10 overlap with stable",
                    f"{fmt_num(vs.get('top10_overlap'), 3)} (v{vs.get('stable_version')})",
                )
            )
        elif vs:
            facts.append(("canary vs stable", vs))
        facts.extend(_through_service(infra.get("service")))
        out.append(facts_table(facts, cls="rollout"))
        if r.get("reasons"):
            out.append(bullets(r["reasons"], "reasons"))
    return "".join(out), True


def _through_service(found: Any) -> list[tuple[str, Any]]:
    """The rollout facts of the canary's comparison through the recommendation service."""
    if not isinstance(found, dict):
        return [("through the service", found)] if found else []
    if "errors" not in found:  # it never answered with the canary
        return [("through the service", f"no canary answer (last: {found.get('last_answer')})")]
    p50, p99, errors = (found.get(n) or {} for n in ("p50_ms", "p99_ms", "errors"))
    return [
        (
            "service p50 / p99, stable · canary (ms)",
            f"{fmt_num(p50.get('stable'), 1)} / {fmt_num(p99.get('stable'), 1)} · "
            f"{fmt_num(p50.get('canary'), 1)} / {fmt_num(p99.get('canary'), 1)}",
        ),
        (
            "service errors, stable · canary",
            f"{fmt_num(errors.get('stable'))} · {fmt_num(errors.get('canary'))} "
            f"of {fmt_num(found.get('users'))} users",
        ),
        (
            "service top-10 overlap · score PSI",
            f"{fmt_num(found.get('top10_overlap'), 3)} · {fmt_num(found.get('score_psi'), 3)}",
        ),
    ]


def feast_service_url(project: str, service: str) -> str:
    """The Feast UI page of one feature service of ``project``."""
    from urllib.parse import quote

    return f"{feast_ui_url()}/p/{quote(project, safe='')}/feature-service/{quote(service, safe='')}"


#: ``(key, title, renderer)`` of every section, in page order.
SECTION_RENDERERS: tuple[tuple[str, str, Callable[[dict[str, Any]], tuple[str, bool]]], ...] = (
    ("validation", "Data validation and drift", validation_section),
    ("features", "Features used", features_section),
    ("training", "Training curves", training_section),
    ("metrics", "Metrics vs champion", metrics_section),
    ("compression", "Compression search", compression_section),
    ("gate", "Gate decision", gate_section),
    ("rollout", "Rollout", rollout_section),
)
