"""DAG integrity: the files parse, follow the house rules, and do nothing at parse time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((ROOT / "dags").glob("*.py"))
HEAVY = ("tensorflow", "tf_keras", "feast", "great_expectations", "mlflow", "pandas")
# Stage modules load only inside tasks, so numpy/pandas there are fine; the ML stacks are not.
HEAVY_FOR_PACKAGE = ("tensorflow", "tf_keras", "feast", "great_expectations", "mlflow")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def test_no_import_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert DAG_FILES, "no DAG files found"


def test_one_dag_per_file_named_after_it(dagbag) -> None:
    for path in DAG_FILES:
        ids = [
            d.dag_id for d in dagbag.dags.values() if Path(d.fileloc).resolve() == path.resolve()
        ]
        assert ids == [path.stem], f"{path.name} defines {ids}"


def test_house_rules(dagbag) -> None:
    for dag in dagbag.dags.values():
        assert dag.doc_md and dag.doc_md.strip(), f"{dag.dag_id} has no doc_md"
        assert dag.max_active_runs == 1
        assert dag.catchup is False
        for t in dag.tasks:
            assert t.retries >= 2, f"{dag.dag_id}.{t.task_id} retries={t.retries}"
            assert t.retry_exponential_backoff, f"{dag.dag_id}.{t.task_id} has no backoff"
        for name, param in dag.params.items():
            schema = dict(param.schema)
            assert "type" in schema, f"{dag.dag_id} param {name} has no JSON schema type"


def test_nightly_wiring(dagbag) -> None:
    dag = dagbag.dags["recsys_nightly"]
    order = [
        "validate",
        "features",
        "train",
        "compress",
        "select",
        "evaluate",
        "register",
        "announce",
    ]
    assert set(order) <= set(dag.task_ids)
    for upstream, downstream in zip(order, order[1:], strict=False):
        assert upstream in dag.get_task(downstream).upstream_task_ids, f"{upstream} -> {downstream}"
    assert {"train", "features"} <= dag.get_task("rank").upstream_task_ids
    assert "rank" in dag.get_task("evaluate").upstream_task_ids
    # Variants fan out as mapped tasks, one per variant, retried independently.
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    assert isinstance(dag.get_task("compress"), MappedOperator)
    # A blessed candidate is announced through an asset, which recsys_promote consumes.
    outlets = [a.name for a in dag.get_task("announce").outlets]
    assert outlets == ["recops_blessed"]
    # A real [day, next day) interval, so tasks key their outputs on a whole day.
    from airflow.sdk import CronDataIntervalTimetable

    assert isinstance(dag.timetable, CronDataIntervalTimetable)


def test_nightly_waits_for_its_day_and_ends_task_logs_with_figures(dagbag) -> None:
    from recops.arrival import LATE_DATA_POKE_S

    dag = dagbag.dags["recsys_nightly"]
    sensor = dag.get_task("wait_for_data")
    # An unpaused nightly without its day waits without holding a worker slot.
    assert sensor.mode == "reschedule" and sensor.poke_interval == LATE_DATA_POKE_S
    assert dag.get_task("validate").upstream_task_ids == {"wait_for_data"}
    # Each stage's last line is its summary (run_stage), not the whole returned dict.
    for dag_id in ("recsys_nightly", "recsys_replay"):
        for t in dagbag.dags[dag_id].tasks:
            if t.task_id == "wait_for_data":
                continue
            # A mapped task keeps its operator arguments in partial_kwargs.
            shown = (
                t.partial_kwargs.get("show_return_value_in_logs")
                if hasattr(t, "partial_kwargs")
                else t.show_return_value_in_logs
            )
            assert shown is False, f"{dag_id}.{t.task_id}"


def test_variant_param_lists_every_variant(dagbag) -> None:
    from recops.compression import VARIANTS

    schema = dagbag.dags["recsys_nightly"].params.get_param("variants").schema
    assert sorted(schema["items"]["enum"]) == sorted(VARIANTS)


def test_promote_has_three_ways_in(dagbag) -> None:
    dag = dagbag.dags["recsys_promote"]
    assert dag.get_task("resolve").task_id in dag.get_task("promote").upstream_task_ids
    assert dag.get_task("promote").pool == "recops_promotion"  # one slot: serialized
    # Scheduled on the nightly's asset or on the registry watcher's asset, and triggerable
    # from the UI with typed Params.
    assets = {a.name: a for a in dag.timetable.asset_condition.objects}
    assert set(assets) == {"recops_blessed", "recops_champion_alias"}
    (watcher,) = assets["recops_champion_alias"].watchers
    assert watcher.trigger.serialize()[0] == "recops.airflow_plugin.ChampionAliasTrigger"
    assert dag.params.get_param("model_name").schema["enum"] == [
        "recops_retrieval",
        "recops_ranking",
    ]
    assert dag.params.get_param("action").schema["enum"] == ["promote", "rollback"]


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_parse_imports_nothing_heavy_and_writes_nothing(path: Path, tmp_path: Path) -> None:
    """Parse each DAG file in a fresh interpreter: no heavy module loads, no state appears."""
    home = tmp_path / "state"
    code = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('d', {str(path)!r})\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    env = {"RECOPS_HOME": str(home), "AIRFLOW_HOME": str(tmp_path / "af"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == [], f"{path.name} imports {loaded} at parse time"
    assert not home.exists(), f"parsing {path.name} created {home}"


def test_package_import_is_light() -> None:
    code = (
        "import json, sys\n"
        "import recops, recops.config, recops.pipeline, recops.data, recops.features\n"
        "import recops.registry, recops.params, recops.wiring, recops.io, recops.errors\n"
        "import recops.validation, recops.training, recops.compression, recops.evaluation\n"
        "import recops.serving, recops_models\n"
        f"print(json.dumps(sorted(m for m in {HEAVY_FOR_PACKAGE!r} if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_nightly_params_match_package_defaults(dagbag) -> None:
    """The UI's Params and the package's defaults are one set of knobs, not two."""
    from recops.params import NIGHTLY_DEFAULTS

    params = dagbag.dags["recsys_nightly"].params
    assert set(params.keys()) == set(NIGHTLY_DEFAULTS)
    for name, default in NIGHTLY_DEFAULTS.items():
        assert params[name] == default, f"Param {name}: DAG {params[name]!r} != package {default!r}"


def test_every_param_has_a_title_and_a_description(dagbag) -> None:
    """The trigger form labels and explains every field (its text comes from recops.params)."""
    for dag in dagbag.dags.values():
        for name, param in dag.params.items():
            schema = dict(param.schema)
            assert schema.get("title"), f"{dag.dag_id} param {name} has no title"
            assert param.description, f"{dag.dag_id} param {name} has no description"


def test_variants_render_as_a_multi_select(dagbag) -> None:
    # Airflow's form renders an array with ``examples`` as a multi-select of those values.
    schema = dagbag.dags["recsys_nightly"].params.get_param("variants").schema
    assert schema["examples"] == schema["items"]["enum"]


def test_promote_model_choice_follows_the_deployment(tmp_path: Path) -> None:
    """RECOPS_MODEL_NAME / RECOPS_RANKING_MODEL_NAME reach the promote form's choices."""
    code = (
        "import json\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(ROOT / 'dags' / 'recsys_promote.py')!r})\n"
        "dag = bag.dags['recsys_promote']\n"
        "print(json.dumps(dag.params.get_param('model_name').schema['enum']))\n"
    )
    env = {
        **os.environ,
        "RECOPS_MODEL_NAME": "shop_retrieval",
        "RECOPS_RANKING_MODEL_NAME": "shop_ranking",
        "RECOPS_HOME": str(tmp_path),
    }
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["shop_retrieval", "shop_ranking"]
