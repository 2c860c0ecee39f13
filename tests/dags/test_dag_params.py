"""Bad DAG Params are refused before any task runs, and again inside the package.

Airflow checks a run's conf in ``SerializedDAG.create_dagrun``
(``airflow/serialization/definitions/dag.py``): ``self.params.deep_merge(conf)`` then
``.validate()``, which raises ``ParamValidationError("Invalid input for param <name>:
...")`` before the DagRun row exists. Every way in goes through it: the REST trigger
(``api_fastapi/core_api/routes/public/dag_run.py: trigger_dag_run`` → ``dag.create_dagrun``)
that the UI's trigger form uses, and ``airflow dags test`` (``airflow.models.dagrun.
get_or_create_dagrun`` → ``dag.create_dagrun``). The schema tests below round-trip each
DAG through ``DagSerialization`` (what the DB stores and the API server loads) and call
exactly that pair; one end-to-end test goes through the real ``airflow dags test``.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.exceptions import ParamValidationError
from recops.config import Settings
from recops.params import NIGHTLY_SCHEMAS, REPLAY_SCHEMAS, check_params, promote_schemas

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = {
    "recsys_nightly": NIGHTLY_SCHEMAS,
    "recsys_promote": promote_schemas(Settings.from_env().promotable_models),
    "recsys_replay": REPLAY_SCHEMAS,
    "recsys_nightly_datasets": {},
}
HUGE = "a" * 10_000_000  # 10 MB
INJECTIONS = ("../..", "a;rm -rf /", "$(touch /tmp/x)")
# Free text: shell and path syntax is just text there (it reaches only the ledger and MLflow).
FREE_TEXT = {("recsys_promote", "reason")}


def _bad_values(dag_id: str, name: str, schema: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Values the schema must refuse, derived from its declared type and bounds."""
    types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    if "integer" in types or "number" in types:
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        yield "below-minimum", (low - 1 if "minimum" in schema else low)
        yield "above-maximum", schema["maximum"] + 1
        yield "string", "5"
        yield "list", [1]
        yield "bool", True
        if "integer" in types:
            yield "fraction", 1.5
        if "null" not in types:
            yield "null", None
    elif "boolean" in types:
        yield "list", [True]
        yield "string", "true"
        yield "int", 1
        yield "null", None
    elif "string" in types:
        if (dag_id, name) not in FREE_TEXT:
            for i, value in enumerate(INJECTIONS):
                yield f"injection{i}", value
        else:
            yield "newline", "ok\nforged ledger line"
            yield "trailing-newline", "ok\n"
            yield "escape", "\x1b[31mred"
            yield "nul", "a\x00b"
        yield "10MB", HUGE
        yield "int", 5
        yield "list", ["x"]
        if "null" not in types:
            yield "null", None
        if "enum" in schema:
            first = next(v for v in schema["enum"] if isinstance(v, str))
            yield "unknown-enum", first.upper() + "_x"
        if "pattern" in schema and (dag_id, name) not in FREE_TEXT:
            yield "trailing-newline", "champion\n"
    elif "array" in types:
        yield "empty", []
        yield "string", "prune_50"
        yield "duplicates", ["prune_50", "prune_50"]
        yield "too-many", [f"v{i}" for i in range(14)]
        for i, value in enumerate(INJECTIONS):
            yield f"injection{i}", [value]
        yield "10MB-item", [HUGE]
        yield "int-item", [5]
    else:  # pragma: no cover - a new Param type needs its bad values here
        raise AssertionError(f"{dag_id}.{name}: no bad values for type {types}")


def _cases() -> list[Any]:
    cases = []
    for dag_id, schemas in SCHEMAS.items():
        for name, schema in schemas.items():
            for label, value in _bad_values(dag_id, name, schema):
                cases.append(pytest.param(dag_id, name, value, id=f"{dag_id}.{name}.{label}"))
    return cases


@pytest.fixture(scope="module")
def dags() -> dict[str, Any]:
    """Each DAG as the API server and scheduler hold it (serialized, then loaded back)."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import DagSerialization

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    return {
        dag_id: DagSerialization.from_dict(DagSerialization.to_dict(dag))
        for dag_id, dag in bag.dags.items()
    }


def _trigger_validation(dag: Any, conf: dict[str, Any]) -> dict[str, Any]:
    # The two calls SerializedDAG.create_dagrun makes before it writes the DagRun.
    return dict(dag.params.deep_merge(conf).validate())


@pytest.mark.parametrize(("dag_id", "name", "value"), _cases())
def test_schema_refuses_bad_conf(dags: dict[str, Any], dag_id: str, name: str, value: Any) -> None:
    with pytest.raises(ParamValidationError) as caught:
        _trigger_validation(dags[dag_id], {name: value})
    assert str(caught.value).startswith(f"Invalid input for param {name}:")


@pytest.mark.parametrize(("dag_id", "name", "value"), _cases())
def test_package_refuses_bad_value(dag_id: str, name: str, value: Any) -> None:
    with pytest.raises(ValueError) as caught:
        check_params({name: value}, SCHEMAS[dag_id])
    message = str(caught.value)
    assert f"param {name!r}" in message
    assert len(message) < 1000  # a 10 MB value is not echoed back


def test_defaults_and_realistic_confs_validate(dags: dict[str, Any]) -> None:
    from recops.params import NIGHTLY_DEFAULTS, merged_params

    resolved = {dag_id: _trigger_validation(dag, {}) for dag_id, dag in dags.items()}
    for dag_id, values in resolved.items():
        assert check_params(values, SCHEMAS[dag_id]) == values
    assert resolved["recsys_nightly"] == NIGHTLY_DEFAULTS == merged_params(None)
    good = {
        "recsys_nightly": {"epochs": 2, "embedding_dim": 16, "learning_rate": 1e-3,
                           "protocol": "temporal", "variants": ["int8_tables", "prune_50"],
                           "quality_budget": 0.0, "seed": 0},
        "recsys_promote": {"model_name": "recops_ranking", "version": 3, "alias": "challenger",
                           "action": "rollback", "force": True, "max_score_psi": 0.25,
                           "min_top_overlap": 0.3,
                           "reason": "rollback after INC-42: p99 > 500 ms; see ../runbook (é, ü)"},
        "recsys_replay": {"replay_model_version": 2**31 - 1, "tolerance": 0.0},
        "recsys_nightly_datasets": {},
    }  # fmt: skip
    for dag_id, conf in good.items():
        values = _trigger_validation(dags[dag_id], conf)
        assert {k: values[k] for k in conf} == conf
        assert check_params(conf, SCHEMAS[dag_id]) == conf


@pytest.mark.parametrize("reason", [*INJECTIONS, "x" * 500, ""])
def test_reason_stays_free_text(dags: dict[str, Any], reason: str) -> None:
    values = _trigger_validation(dags["recsys_promote"], {"reason": reason})
    assert values["reason"] == reason
    from recops.pipeline_promote import promotion_requests

    (request,) = promotion_requests(values, {})
    assert request["reason"] == reason and request["model_name"] == "recops_retrieval"


def test_the_canary_guards_reach_each_promotion(dags: dict[str, Any]) -> None:
    from recops.pipeline_promote import promotion_requests
    from recops.promotion import PromoteConfig

    values = _trigger_validation(dags["recsys_promote"], {})
    assert (values["max_score_psi"], values["min_top_overlap"]) == (None, None)  # report only
    guarded = _trigger_validation(
        dags["recsys_promote"], {"max_score_psi": 0.25, "min_top_overlap": 0.3}
    )
    blessed = {"recops_blessed": [{"versions": {"recops_retrieval": 4}, "run_id": "r"}]}
    (request,) = promotion_requests(guarded, blessed)
    assert (request["max_score_psi"], request["min_top_overlap"]) == (0.25, 0.3)
    config = PromoteConfig(model_name="recops_retrieval", max_score_psi=0.25)
    assert (config.max_score_psi, config.min_top_overlap) == (0.25, None)
    with pytest.raises(ValueError, match="param 'min_top_overlap'"):
        PromoteConfig(model_name="recops_retrieval", min_top_overlap=2.0)


def test_package_schemas_are_the_dag_params(dags: dict[str, Any]) -> None:
    """recops.params mirrors the DAG files key for key, so both layers refuse the same.

    One exception: the form offers the datasets present when the DAG was parsed (an
    ``enum``); the package accepts any safe name there and refuses one without a spec
    when it looks for it, since a dataset may be imported after the DAG was parsed.
    """
    from recops.config import Settings
    from recops.layout import known_datasets

    for dag_id, dag in dags.items():
        declared = {
            name: {
                k: v
                for k, v in dag.params.get_param(name).schema.items()
                # Annotations only (form text, multi-select choices): they refuse nothing.
                if k not in {"description", "title", "examples", "values_display"}
                and not (name == "dataset" and k == "enum")
            }
            for name in dag.params
        }
        assert declared == SCHEMAS[dag_id], dag_id
        if "dataset" in dag.params:
            offered = dag.params.get_param("dataset").schema["enum"]
            assert offered == list(known_datasets(Settings.from_env())), offered


def test_every_form_field_is_labelled_bounded_and_opens_valid(dags: dict[str, Any]) -> None:
    """What Airflow 3.3's trigger form reads from a Param's schema, checked for every field.

    The form (``airflow/ui``'s FlexibleForm) labels a field with ``schema.title`` and puts
    ``description`` under it; renders ``enum`` as a select, an array with ``examples`` as a
    multi-select (``values_display`` labels the choices); gives its number field
    ``schema.minimum`` / ``maximum`` as bounds (it ignores ``exclusiveMinimum``); and marks a
    non-nullable field whose value is empty as required, so the form opens invalid.
    """
    for dag_id, dag in dags.items():
        for name in dag.params:
            param = dag.params.get_param(name)
            schema, where = param.schema, f"{dag_id}.{name}"
            assert schema.get("title"), where
            assert param.description and param.description.endswith("."), where
            types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            if "integer" in types or "number" in types:
                assert "minimum" in schema and "maximum" in schema, where
                assert "exclusiveMinimum" not in schema, where
            if "array" in types:
                assert schema["examples"] == schema["items"]["enum"], where
            if "null" not in types:
                assert param.value not in (None, ""), f"{where} opens empty and required"
    variants = dags["recsys_nightly"].params.get_param("variants").schema
    assert len(variants["values_display"]) == len(variants["examples"]) == 13
    for name in ("dataset", "protocol"):
        assert dags["recsys_nightly"].params.get_param(name).schema["enum"], name
    for name in ("model_name", "action"):
        assert dags["recsys_promote"].params.get_param(name).schema["enum"], name


# --------------------------------------------------------------------------- package


@pytest.mark.parametrize(
    "bad", ["../..", "x; rm -rf /", "$(touch /tmp/x)", "a/b", "", "recops\n", 7]
)
def test_package_entry_points_refuse_unsafe_names(
    bad: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recops.config import Settings
    from recops.params import merged_params
    from recops.pipeline import variant_step
    from recops.pipeline_promote import promotion_requests, replay_step
    from recops.promotion import PromoteConfig, rollback_model

    monkeypatch.setenv("RECOPS_HOME", str(tmp_path / "home"))
    with pytest.raises(ValueError, match="'model_name'"):
        promotion_requests({"model_name": bad}, {})
    with pytest.raises(ValueError, match="'model_name'"):  # a forged asset event
        promotion_requests({}, {"recops_blessed": [{"versions": {bad: 1}, "run_id": "r"}]})
    with pytest.raises(ValueError, match="'model_name'"):
        promotion_requests(
            {},
            {
                "recops_champion_alias": [
                    {"from_trigger": True, "payload": {"model_name": bad, "version": 1}}
                ]
            },
        )
    with pytest.raises(ValueError, match="'alias'"):
        promotion_requests({"alias": bad}, {})
    with pytest.raises(ValueError, match="'protocol'"):
        merged_params({"protocol": bad})
    with pytest.raises(ValueError, match="'variants'"):
        merged_params({"variants": [bad]})
    with pytest.raises(ValueError, match="'variants'"):
        variant_step({}, {}, bad, None)
    with pytest.raises(ValueError, match="'replay_model_version'"):
        replay_step({"replay_model_version": str(bad), "tolerance": 0.01})
    with pytest.raises(ValueError, match="'model_name'"):
        PromoteConfig(model_name=bad)
    with pytest.raises(ValueError, match="'model_name'"):
        rollback_model(bad)
    # Refused before the lock file (named after the model) or anything else was made.
    assert not Settings.from_env().home.exists()


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_package_refuses_non_finite_numbers(value: float) -> None:
    # JSON Schema bounds never refuse NaN (all comparisons are false) and Python's json
    # parses NaN and Infinity, so the package is the layer that stops them.
    from recops.params import merged_params
    from recops.pipeline_promote import replay_step

    with pytest.raises(ValueError, match="'quality_budget'"):
        merged_params({"quality_budget": value})
    with pytest.raises(ValueError, match="'tolerance'"):
        replay_step({"replay_model_version": 1, "tolerance": value})


def test_package_refuses_unknown_keys() -> None:
    # Airflow accepts conf keys no Param declares (with an empty schema); the package does not.
    from recops.params import merged_params
    from recops.pipeline_promote import promotion_requests, replay_step

    for call in (
        lambda: merged_params({"epochs": 2, "cmd": "$(touch /tmp/x)"}),
        lambda: promotion_requests({"cmd": "a;rm -rf /"}, {}),
        lambda: replay_step({"replay_model_version": 1, "tolerance": 0.01, "path": "../.."}),
    ):
        with pytest.raises(ValueError, match="unknown params"):
            call()


# --------------------------------------------------------------------------- end to end


@pytest.mark.integration
def test_cli_trigger_with_bad_params_runs_no_task(stack, tmp_path: Path) -> None:  # noqa: ANN001
    """`airflow dags test recsys_promote` with a path-traversal model name: refused, nothing ran."""
    marker = tmp_path / "pwned"
    conf = json.dumps({"model_name": "../..", "alias": f"$(touch {marker})"})
    run = stack.airflow(
        "dags", "test", "recsys_promote", "2030-01-01T00:00:00+00:00", "--conf", conf, timeout=600
    )
    log = run.stdout + run.stderr
    assert run.returncode != 0, log[-4000:]
    assert "ParamValidationError" in log and "Invalid input for param model_name" in log, log[
        -4000:
    ]

    db = sqlite3.connect(stack.settings.airflow_home / "airflow.db")
    try:
        runs = db.execute(
            "SELECT COUNT(*) FROM dag_run WHERE dag_id = 'recsys_promote'"
        ).fetchone()[0]
        tis = db.execute(
            "SELECT task_id, state FROM task_instance WHERE dag_id = 'recsys_promote'"
        ).fetchall()
    finally:
        db.close()
    assert runs == 0 and tis == [], (runs, tis)
    serving = stack.settings.home / "serving"
    assert not serving.exists() or not any(serving.rglob("*")), sorted(serving.rglob("*"))
    assert not marker.exists()


def test_the_first_nightly_task_refuses_undeclared_params_before_touching_data(
    tmp_path, monkeypatch
) -> None:  # noqa: ANN001
    # Airflow accepts conf keys no Param declares; `validate`, the first task, refuses them
    # (as ParamError, which the task turns into a failure without retries).
    from recops.params import ParamError
    from recops.pipeline import validate_step

    monkeypatch.setenv("RECOPS_HOME", str(tmp_path / "home"))
    with pytest.raises(ParamError, match="unknown params.*bogus"):
        validate_step("1998-04-22T00:00:00+00:00", "1998-04-23T00:00:00+00:00", {"bogus": "../.."})
    assert not (tmp_path / "home").exists()
