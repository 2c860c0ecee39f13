"""The run report, built from a real small run recorded in MLflow.

One module-scoped run: the session's tiny two-tower (2 epochs, valid NDCG@10 per epoch),
its real int8-table variant, a real selection (table + Pareto PNG), real evaluation of
both, a real GX validation with drift on synthetic published days, and the register step's
real MLflow logging: the float model is registered first and becomes champion, the int8
model is the candidate gated against it. The report is built from what MLflow holds.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import mlflow
import pytest
from _tiny_data import TinyData
from PIL import Image
from recops import links
from recops.compression import SelectConfig, VariantConfig, compress_variant, select_variant
from recops.config import Settings
from recops.data import partition_path, publish, synthesize
from recops.evaluation import EvalConfig, evaluate
from recops.pipeline import _flat_metrics, _served_metrics
from recops.registry import GateConfig, RegisterConfig, register
from recops.report import ReportConfig, build_report, record_report_inputs
from recops.training import TrainResult
from recops.validation import ValidateConfig, validate_partition

INJECTED = "<script>alert('x')</script>"
DAG_ID = "recsys_nightly"
RUN_ID = "manual__2026-11-22T19:00:00+00:00"
REFS = {"retrieval_v1": ["user_profile:country", "user_profile:tier", "item_profile:category"]}


@dataclass(frozen=True)
class RecordedRun:
    settings: Settings
    run_id: str
    candidate: dict[str, float]
    champion: dict[str, float]
    trained: TrainResult
    variants_uri: str
    validation: dict[str, Any]
    reasons: list[str]


@pytest.fixture(scope="module")
def recorded(
    tiny_data: TinyData, tiny_two_tower: TrainResult, tmp_path_factory: pytest.TempPathFactory
) -> RecordedRun:
    root = tmp_path_factory.mktemp("report-run")
    home = root / "home"
    settings = Settings(home=home, mlflow_tracking_uri=f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
    trained = tiny_two_tower
    train_dir = str(Path(trained.model_dir).parent)
    common = {"split_uri": trained.split_uri, "users_uri": tiny_data.users_uri}
    variant = compress_variant(VariantConfig(
        variant="int8_tables", train_dir=train_dir, training_set_uri=tiny_data.training_set_uri,
        items_uri=tiny_data.items_uri, output_dir=str(root / "variant-int8"), batch_size=128,
        replicas=1, **common,
    ))  # fmt: skip
    assert variant.status == "ok", variant.reason
    selection = select_variant(SelectConfig(
        train_dir=train_dir, variant_dirs=(str(root / "variant-int8"),),
        output_dir=str(root / "select"),
        quality_budget=0.5, latency_calls=5, warmup_calls=1, measure_memory=False, **common,
    ))  # fmt: skip
    scored = {
        **common,
        "spec_uri": tiny_data.spec_uri,
        "training_set_uri": tiny_data.training_set_uri,
    }
    candidate = _flat_metrics(
        evaluate(EvalConfig(model_dir=selection.model_dir, **scored)).to_dict()
    )
    candidate.update(_served_metrics(selection.model_dir, scored, 1000))
    champion = _flat_metrics(evaluate(EvalConfig(model_dir=trained.model_dir, **scored)).to_dict())

    # A real GX validation of the last of four synthetic days, with the others as history.
    data_settings = Settings(home=root / "data-home")
    ingested = publish(
        data_settings, *synthesize(rows=800, users=30, items=40, days=4, seed=3), source="test"
    )
    start = datetime.fromisoformat(ingested.last_date).replace(tzinfo=UTC)
    validation = validate_partition(ValidateConfig(
        interactions_path=str(partition_path(data_settings, ingested.last_date)),
        users_path=str(data_settings.users_path), items_path=str(data_settings.items_path),
        interval_start=start, interval_end=start + timedelta(days=1),
        report_dir=str(root / "validation"),
        published_dir=str(data_settings.interactions_dir), data_docs=False,
    )).to_dict()  # fmt: skip

    gate = GateConfig(
        min_recall_at_10=0.01,
        min_ndcg_at_10=0.01,
        max_relative_drop=0.5,
        segment_max_relative_drop=0.5,
    )
    first = register(
        RegisterConfig(model_dir=trained.model_dir, model_key="float", metrics=champion, gate=gate),
        settings,
    )
    assert first.blessed and first.version == 1  # the champion the candidate is gated against
    lineage = {
        "dataset": "tiny",
        "dag_id": DAG_ID,
        "run_id": RUN_ID,
        "data_interval_start": "2026-11-21T00:00:00+00:00",
        # Lineage values also become version tags (recops.lineage.*): an untrusted string.
        "data_interval_end": f"2026-11-22T00:00:00+00:00 {INJECTED}",
        "feature_services": {"retrieval": "retrieval_v1", "ranking": ""},
        "compression": selection.selected,
        "selection_reason": selection.selection_reason,
    }
    second = register(RegisterConfig(
        model_dir=selection.model_dir, model_key="int8", metrics=candidate, gate=gate,
        lineage=lineage,
        artifacts={"validation": validation["report_uri"], "compression/table": selection.table_uri,
                   "compression/pareto": selection.pareto_png_uri},
        baseline_metrics=champion, baseline_version=1, run_name=f"{DAG_ID}/{RUN_ID} {INJECTED}",
        auto_promote=False,
    ), settings)  # fmt: skip
    evaluation = {
        "baseline_version": 1,
        "baseline_metrics": champion,
        "selected": selection.selected,
        "selection_reason": selection.selection_reason,
        "rerank_policy": "retrieval",
    }
    features = {
        "feature_service": "retrieval_v1",
        "as_of": "2026-11-22T00:00:00+00:00",
        "n_rows": tiny_data.n_rows,
    }
    record_report_inputs(
        second.run_id,
        trained=trained.to_dict(),
        features=features,
        evaluation=evaluation,
        feature_refs=REFS,
        settings=settings,
    )
    return RecordedRun(
        settings=settings,
        run_id=second.run_id,
        candidate=candidate,
        champion=champion,
        trained=trained,
        variants_uri=selection.table_uri,
        validation=validation,
        reasons=second.reasons,
    )


@pytest.fixture(scope="module")
def page(recorded: RecordedRun) -> tuple[Any, str]:
    result = build_report(
        ReportConfig(dag_id=DAG_ID, run_id=RUN_ID, mlflow_run_id=recorded.run_id), recorded.settings
    )
    return result, Path(result.path).read_text(encoding="utf-8")


def _section(html_text: str, key: str) -> str:
    match = re.search(rf'<section id="{key}">(.*?)</section>', html_text, re.S)
    assert match, f"section {key} missing"
    return match.group(1)


def test_report_is_written_under_recops_home_and_logged_to_mlflow(
    recorded: RecordedRun, page: tuple[Any, str]
) -> None:
    result, text = page
    assert (
        Path(result.path)
        == recorded.settings.home.resolve() / "reports" / DAG_ID / RUN_ID / "index.html"
    )
    assert result.artifact_uri.endswith("/report/index.html")
    assert set(result.sections) == {
        "validation",
        "features",
        "training",
        "metrics",
        "compression",
        "gate",
    }
    assert not result.rolled_out
    client = mlflow.MlflowClient(tracking_uri=recorded.settings.mlflow_tracking_uri)
    logged = Path(
        client.download_artifacts(
            recorded.run_id, "report/index.html", str(recorded.settings.home / "downloaded")
        )
    )
    assert logged.read_text(encoding="utf-8") == text
    # Self-contained: no external fetches and no script at all; links only to the UIs,
    # each opened in a new tab (the page shows inside Airflow's iframe).
    assert not re.search(r'src="(?!data:image/png;base64,)', text)
    assert "<script" not in text.lower()
    bases = (links.airflow_url(), links.mlflow_ui_url(), links.feast_ui_url())
    anchors = re.findall(r'<a href="([^"]+)" target="_blank" rel="noopener noreferrer">', text)
    assert anchors and len(anchors) == text.count("href=")
    assert all(html.unescape(a).startswith(bases) for a in anchors)


def test_the_report_links_out_to_airflow_mlflow_and_feast(
    recorded: RecordedRun, page: tuple[Any, str]
) -> None:
    _, text = page
    header = html.unescape(text.split("<main>", 1)[0])
    client = mlflow.MlflowClient(tracking_uri=recorded.settings.mlflow_tracking_uri)
    run = client.get_run(recorded.run_id)
    assert links.airflow_run_url(DAG_ID, RUN_ID) in header
    assert links.airflow_task_url(DAG_ID, RUN_ID, "train") in header
    assert links.mlflow_run_url(run.info.experiment_id, recorded.run_id) in header
    assert links.mlflow_version_url("recops_retrieval", 2) in header
    features = html.unescape(_section(text, "features"))
    project = recorded.settings.feast_project
    assert f"{links.feast_ui_url()}/p/{project}/feature-service/retrieval_v1" in features
    assert f"{links.feast_ui_url()}/p/{project}/lineage" in features


def test_sections_show_the_runs_real_values(recorded: RecordedRun, page: tuple[Any, str]) -> None:
    _, text = page
    validation = _section(text, "validation")
    assert "passed" in validation and recorded.validation["partition_date"] in validation
    assert f"{recorded.validation['n_expectations']:,}" in validation
    assert "row_count" in validation and "Drift and volume" in validation
    features = _section(text, "features")
    assert "retrieval_v1" in features and "user_profile:tier" in features

    metrics = _section(text, "metrics")
    assert "champion v1" in metrics
    for name in ("recall_at_10", "ndcg_at_10"):
        assert (
            f"{recorded.candidate[name]:.4f}" in metrics
            and f"{recorded.champion[name]:.4f}" in metrics
        )
    served = metrics.split("<h3>As served", 1)[1].split("</table>", 1)[0]
    for name in ("recall_at_10", "ndcg_at_10"):
        as_served = recorded.candidate[f"served.{name}"]
        assert (
            f"<td>{name}</td><td>{as_served:.4f}</td><td>{recorded.candidate[name]:.4f}</td>"
            in served
        )
    assert "Already-seen items in the served top-10: 0.00%" in metrics
    segment_keys = [k for k in recorded.candidate if "." in k and not k.startswith("served.")]
    assert segment_keys, "evaluation produced no segment metrics"
    segment_table = metrics.split("<h3>Segments</h3>", 1)[1]
    for key in segment_keys:
        seg, name = key.split(".")
        assert (
            f"<td>{seg}</td><td>{name}</td><td>{recorded.candidate[key]:.4f}</td>" in segment_table
        )

    compression = _section(text, "compression")
    rows = json.loads(Path(recorded.variants_uri).read_text())
    for row in rows:
        assert row["name"] in compression
    assert "int8_tables" in compression and "float" in compression

    gate = _section(text, "gate")
    assert "blessed" in gate
    for reason in recorded.reasons:
        assert html.escape(reason, quote=True) in gate
    assert "Not rolled out yet" in _section(text, "rollout")


def test_training_curve_and_pareto_pngs_decode(
    recorded: RecordedRun, page: tuple[Any, str]
) -> None:
    _, text = page
    training = _section(text, "training")
    pngs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', training)
    assert len(pngs) == 1 and "No per-epoch history" not in training
    curve = Image.open(io.BytesIO(base64.b64decode(pngs[0])))
    curve.load()
    assert curve.format == "PNG" and curve.size[0] > 300
    assert len(recorded.trained.valid_ndcg_at_10) == recorded.trained.epochs_run == 2
    client = mlflow.MlflowClient(tracking_uri=recorded.settings.mlflow_tracking_uri)
    steps = client.get_metric_history(recorded.run_id, "train.valid_ndcg_at_10")
    assert [m.value for m in sorted(steps, key=lambda m: m.step)] == pytest.approx(
        recorded.trained.valid_ndcg_at_10
    )

    (pareto,) = re.findall(
        r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', _section(text, "compression")
    )
    image = Image.open(io.BytesIO(base64.b64decode(pareto)))
    image.load()
    assert image.format == "PNG"
    pareto_file = json.loads(Path(recorded.variants_uri).read_text())
    assert pareto_file  # the table the plot was drawn from


def test_untrusted_text_is_escaped(recorded: RecordedRun, page: tuple[Any, str]) -> None:
    _, text = page
    client = mlflow.MlflowClient(tracking_uri=recorded.settings.mlflow_tracking_uri)
    tags = client.get_model_version("recops_retrieval", "2").tags
    assert INJECTED in tags["recops.lineage.data_interval_end"]
    assert INJECTED not in text
    header = text.split("<main>", 1)[0]
    escaped = "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;"
    assert f"00:00:00+00:00 {escaped}" in header  # the data interval, from lineage
    assert f"{RUN_ID} {escaped}" in header  # the MLflow run name
    assert "<dt>Dataset</dt><dd>tiny</dd>" in header  # the dataset, from lineage
    assert "<title>Run report · tiny · " in header


def test_rebuilding_does_not_duplicate_history(recorded: RecordedRun) -> None:
    client = mlflow.MlflowClient(tracking_uri=recorded.settings.mlflow_tracking_uri)
    before = len(client.get_metric_history(recorded.run_id, "train.valid_ndcg_at_10"))
    record_report_inputs(
        recorded.run_id,
        trained=recorded.trained.to_dict(),
        features={"feature_service": "retrieval_v1"},
        evaluation={},
        feature_refs=REFS,
        settings=recorded.settings,
    )
    assert len(client.get_metric_history(recorded.run_id, "train.valid_ndcg_at_10")) == before == 2


def test_a_promotion_outcome_rerenders_the_producing_runs_report(recorded: RecordedRun) -> None:
    from recops.report import rollout_report

    # What promote_step records when a canary fails (PromotionError.reasons), for v2.
    failed = {
        "model_name": "recops_retrieval",
        "version": 2,
        "outcome": "failed",
        "reasons": ["LATENCY: p99 912.0 ms exceeds the SLO of 500.0 ms at 20.0 QPS"],
    }
    result = rollout_report(failed, recorded.settings)
    assert (
        result is not None and result.run_id == RUN_ID and result.mlflow_run_id == recorded.run_id
    )
    assert result.rolled_out and "rollout" in result.sections
    rollout = _section(Path(result.path).read_text(encoding="utf-8"), "rollout")
    assert (
        "recops_retrieval v2" in rollout
        and "failed" in rollout
        and "p99 912.0 ms exceeds the SLO" in rollout
    )
    client = mlflow.MlflowClient(tracking_uri=recorded.settings.mlflow_tracking_uri)
    assert client.download_artifacts(
        recorded.run_id, "report/rollouts.json", str(recorded.settings.home / "rl")
    )
    # v1 was registered by hand, not by a DAG run: there is no nightly report to update.
    assert (
        rollout_report(
            {"model_name": "recops_retrieval", "version": 1, "outcome": "promoted"},
            recorded.settings,
        )
        is None
    )


def test_a_report_failure_never_fails_promotion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from recops.pipeline_promote import _update_run_report

    monkeypatch.setenv("RECOPS_HOME", str(tmp_path / "empty-home"))
    # An empty registry: the version is unknown, so the report cannot be found.
    _update_run_report({"model_name": "recops_retrieval", "version": 7, "outcome": "promoted"})
    assert any(
        "run report for recops_retrieval v7 not updated" in r.getMessage() for r in caplog.records
    )


RERUN_ID = "manual__2026-11-23T07:00:00+00:00"
TRACKED_ID = "scheduled__2026-11-24T00:00:00+00:00"


def _steps(recorded: RecordedRun, candidate: dict[str, float]) -> dict[str, Any]:
    """What a later nightly's tasks hand the report when register found v2 already there."""
    return {
        "registered": {
            "retrieval": {
                "model_name": "recops_retrieval",
                "version": 2,
                "run_id": recorded.run_id,
                "created": False,
                "blessed": True,
                "reasons": recorded.reasons,
            }
        },
        "features": {"feature_service": "retrieval_v1", "dataset": "tiny"},
        "trained": recorded.trained.to_dict(),
        # v2 became the champion since: the same model must not be compared with itself.
        "evaluation": {"metrics": candidate, "baseline_version": 2, "baseline_metrics": candidate},
        "feature_refs": REFS,
        "settings": recorded.settings,
    }


def test_a_rerun_shows_its_own_data_and_never_the_champion_against_itself(
    recorded: RecordedRun, page: tuple[Any, str]
) -> None:
    from recops.report import report_dag_run

    client = mlflow.MlflowClient(tracking_uri=recorded.settings.mlflow_tracking_uri)
    first_inputs = client.download_artifacts(
        recorded.run_id, "report/inputs.json", str(recorded.settings.home / "before")
    )
    # This run's own figures differ from those v2 was registered with.
    candidate = {k: v / 2 for k, v in recorded.candidate.items()}
    run = {"dag_id": DAG_ID, "run_id": RERUN_ID, "data_interval_start": "2026-11-23"}
    result = report_dag_run(run, **_steps(recorded, candidate))
    text = Path(result.path).read_text(encoding="utf-8")

    # Recorded in an MLflow run of its own, tagged with its Airflow run; v2's run untouched.
    assert result.run_id == RERUN_ID and result.mlflow_run_id != recorded.run_id
    home = client.get_run(result.mlflow_run_id)
    assert home.data.tags[links.AIRFLOW_RUN_ID_TAG] == RERUN_ID
    again = client.download_artifacts(
        recorded.run_id, "report/inputs.json", str(recorded.settings.home / "after")
    )
    assert Path(again).read_text() == Path(first_inputs).read_text()

    header = html.unescape(text.split("<main>", 1)[0])
    assert f"registered earlier by run {RUN_ID}; this run re-used it" in header
    assert links.airflow_run_url(DAG_ID, RERUN_ID) in header
    metrics = _section(text, "metrics")
    assert f"{candidate['ndcg_at_10']:.4f}" in metrics
    assert f"{recorded.candidate['ndcg_at_10']:.4f}" not in metrics  # v2's registered figures
    assert "champion itself (v2)" in metrics and "champion v2" not in metrics
    assert "<th>change</th>" not in metrics
    # The first run's validation and gate are not shown as this run's.
    assert "No validation report was logged" in _section(text, "validation")
    gate = html.unescape(_section(text, "gate"))
    assert f"registered by Airflow run {RUN_ID}" in gate
    assert not any(html.escape(r, quote=True) in _section(text, "gate") for r in recorded.reasons)

    # Rebuilt for the same Airflow run: the same MLflow run, no second one.
    assert report_dag_run(run, **_steps(recorded, candidate)).mlflow_run_id == home.info.run_id


def test_a_tracked_dag_run_reports_from_its_own_run_and_its_task_runs_curves(
    recorded: RecordedRun,
) -> None:
    from recops.report import report_dag_run

    client = mlflow.MlflowClient(tracking_uri=recorded.settings.mlflow_tracking_uri)
    experiment = client.get_run(recorded.run_id).info.experiment_id
    tags = {links.AIRFLOW_DAG_ID_TAG: DAG_ID, links.AIRFLOW_RUN_ID_TAG: TRACKED_ID}
    parent = client.create_run(experiment, run_name=TRACKED_ID, tags=tags).info.run_id
    train = client.create_run(
        experiment,
        run_name="train",
        tags={**tags, "mlflow.parentRunId": parent, links.AIRFLOW_TASK_ID_TAG: "train"},
    ).info.run_id
    losses = [0.9, 0.6, 0.5]
    for step, loss in enumerate(losses):
        client.log_metric(train, "loss", loss, step=step)
        client.log_metric(train, "val_loss", loss + 0.1, step=step)
    client.log_metric(train, "system/cpu_utilization_percentage", 50.0, step=0)
    client.log_metric(train, "system/cpu_utilization_percentage", 60.0, step=1)

    steps = _steps(recorded, recorded.candidate)
    steps["trained"] = {**steps["trained"], "valid_ndcg_at_10": []}
    result = report_dag_run({"dag_id": DAG_ID, "run_id": TRACKED_ID}, **steps)
    assert result.mlflow_run_id == parent  # the DAG run's own MLflow run holds the report
    names = {f.path for f in client.list_artifacts(parent, "report")}
    assert {"report/inputs.json", "report/index.html"} <= names
    text = Path(result.path).read_text(encoding="utf-8")
    training = _section(text, "training")
    (png,) = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', training)
    assert Image.open(io.BytesIO(base64.b64decode(png))).size[0] > 300
    header = html.unescape(text.split("<main>", 1)[0])
    assert links.mlflow_run_url(experiment, train) in header
    assert links.airflow_task_url(DAG_ID, TRACKED_ID, "train") in header

    # The curves are the task run's per-epoch metrics (system metrics are not curves).
    from recops.report.gather import gather
    from recops.report.runs import dag_run_runs

    runs = dag_run_runs(client, DAG_ID, TRACKED_ID)
    config = ReportConfig(dag_id=DAG_ID, run_id=TRACKED_ID, mlflow_run_id=parent)
    data = gather(client, config, recorded.settings.home / "gathered", runs)
    assert data["history"]["two-tower"] == {
        "loss": [(0, 0.9), (1, 0.6), (2, 0.5)],
        "val_loss": [(0, pytest.approx(1.0)), (1, pytest.approx(0.7)), (2, pytest.approx(0.6))],
    }
    assert not data["model"]["own"] and data["model"]["owner"] == RUN_ID


def test_the_rollout_section_shows_the_comparison_through_the_service(
    recorded: RecordedRun,
) -> None:
    from recops.report import rollout_report

    through = {
        "url": "http://127.0.0.1:8000", "users": 100,
        "versions": {"stable": {"retrieval": 1}, "canary": {"retrieval": 2}},
        "errors": {"stable": 0, "canary": 0},
        "p50_ms": {"stable": 4.25, "canary": 4.5}, "p99_ms": {"stable": 7.0, "canary": 8.5},
        "top10_overlap": 0.4312, "score_psi": 0.0821,
    }  # fmt: skip
    promoted = {
        "model_name": "recops_retrieval",
        "version": 2,
        "outcome": "promoted",
        "infra_validation": {"load_and_query": "passed", "service": through},
    }
    result = rollout_report(promoted, recorded.settings)
    assert result is not None
    rollout = _section(Path(result.path).read_text(encoding="utf-8"), "rollout")
    assert "4.2 / 7 · 4.5 / 8.5" in rollout  # fmt_num: whole numbers lose their ".0"
    assert "0 · 0 of 100 users" in rollout
    assert "0.431 · 0.082" in rollout


def test_items_seen_before_the_history_window_are_shown_apart() -> None:
    from recops.report.sections import _served_table

    scored = {"served.recall_at_10": 0.2, "served.ndcg_at_10": 0.1, "served.seen_share": 0.0}
    assert "before the history window" not in _served_table(scored, {}, "champion")
    older = {**scored, "served.seen_share_beyond_history": 0.0125}
    text = _served_table(older, {}, "champion")
    assert "Already-seen items in the served top-10: 0.00%." in text
    assert "before the history window the service holds" in text and "1.25%" in text
