"""Registry-driven promotion on real MLflow, Feast and the local TF Serving server.

One home, one server, a sequence of promotions: first roll-out, an upgrade, a corrupt
version moved to ``champion`` "in the MLflow UI" (the watcher's path) that must be rolled
back, a rollback, and a tampered artifact that must never be loaded.
"""

from __future__ import annotations

import asyncio
import pickle
from pathlib import Path
from typing import Any

import mlflow
import pytest
from recops.config import Settings
from recops.ledger import history
from recops.promotion import (
    PromoteConfig,
    PromotionError,
    pair_refusal,
    pending_alias_change,
    promote,
    rollback_model,
    served_stable,
)
from recops.registry import CHAMPION, RegisterConfig, register

from tests.support.contract_model import corrupt_variables, export_contract_model
from tests.support.stack import free_port

pytestmark = pytest.mark.integration
GOOD = {"recall_at_10": 0.2, "ndcg_at_10": 0.3}
MODEL = "recops_retrieval"


class _Marker:
    """Unpickling this would create a file: proof that nothing unpickled it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):  # noqa: ANN204
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with published tiny data and materialized online features."""
    from recops.data import publish, synthesize
    from recops.features import FeaturesConfig, build_features

    root = tmp_path_factory.mktemp("promote")
    mp = pytest.MonkeyPatch()
    mp.setenv("RECOPS_HOME", str(root / "home"))
    mp.setenv("RECOPS_REST_PORT", str(free_port()))
    mp.setenv("RECOPS_GRPC_PORT", str(free_port()))
    mp.setenv("RECOPS_ACTOR", "promotion-test")
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = Settings.from_env()
    inter, users, items = synthesize(rows=400, users=20, items=30, days=3, seed=5)
    published = publish(settings, inter, users, items, source="test")
    from datetime import UTC, datetime, timedelta

    end = datetime.fromisoformat(published.last_date).replace(tzinfo=UTC) + timedelta(days=1)
    build_features(
        FeaturesConfig(
            interval_start=end - timedelta(days=1), interval_end=end, output_dir=str(root / "f")
        ),
        settings,
    )
    yield root
    from recops.serving.server import stop_background

    stop_background(settings)
    mp.undo()


def _version_of(client: mlflow.MlflowClient, tf2model: Path, name: str = MODEL) -> int | None:
    """Registered version of ``name`` whose logged model's artifacts hold ``tf2model``."""
    for v in client.search_model_versions(f"name='{name}'"):
        model_id = str(v.source).removeprefix("models:/")
        if model_id and model_id in tf2model.parts:
            return int(v.version)
    return None


def _register(root: Path, key: str, seed: int) -> int:
    model = export_contract_model(root / f"sm-{key}", seed=seed)
    return register(
        RegisterConfig(model_dir=str(model), model_key=key, metrics=GOOD, auto_promote=False)
    ).version


def test_promotion_lifecycle(home: Path) -> None:
    settings = Settings.from_env()
    client = mlflow.MlflowClient(tracking_uri=settings.mlflow_tracking_uri)

    v1 = _register(home, "v1", seed=1)
    first = promote(
        PromoteConfig(model_name=MODEL, version=v1, source="ui", canary_seconds=1.0), settings
    )
    assert first.outcome == "promoted" and first.labels.get("stable") == v1
    assert served_stable(settings, MODEL) == v1
    assert int(client.get_model_version_by_alias(MODEL, CHAMPION).version) == v1

    v2 = _register(home, "v2", seed=2)
    second = promote(
        PromoteConfig(model_name=MODEL, version=v2, source="nightly", canary_seconds=1.0), settings
    )
    assert second.outcome == "promoted" and served_stable(settings, MODEL) == v2
    assert second.infra_validation, "the canary was validated"
    # Promoting what already serves is a no-op.
    assert (
        promote(PromoteConfig(model_name=MODEL, version=v2), settings).outcome == "already-serving"
    )

    # Someone moves champion to v3 in the MLflow UI: the watcher sees it...
    v3 = _register(home, "v3", seed=3)
    client.set_registered_model_alias(MODEL, CHAMPION, str(v3))
    assert pending_alias_change(settings, MODEL) == v3
    # ...and the promotion it starts fails its canary (an SLO no server meets), so serving,
    # labels and the alias go back, with the reasons.
    with pytest.raises(PromotionError, match="rolled back") as failed:
        promote(
            PromoteConfig(
                model_name=MODEL, source="registry-watch", canary_seconds=1.0, slo_p99_ms=0.001
            ),
            settings,
        )
    assert any("p99" in r for r in failed.value.reasons), failed.value.reasons
    assert served_stable(settings, MODEL) == v2
    assert int(client.get_model_version_by_alias(MODEL, CHAMPION).version) == v2
    assert pending_alias_change(settings, MODEL) is None

    # A version whose stored variables are corrupt never reaches serving.
    v4 = _register(home, "v4", seed=4)
    stored = [p for p in settings.mlflow_dir.rglob("tf2model") if _version_of(client, p) == v4]
    assert stored, "found v4's stored SavedModel"
    for tf2 in stored:
        corrupt_variables(tf2)
    client.set_registered_model_alias(MODEL, CHAMPION, str(v4))
    with pytest.raises(PromotionError, match="cannot be served"):
        promote(
            PromoteConfig(model_name=MODEL, source="registry-watch", canary_seconds=1.0), settings
        )
    assert served_stable(settings, MODEL) == v2
    assert int(client.get_model_version_by_alias(MODEL, CHAMPION).version) == v2

    back = rollback_model(MODEL, v1, reason="test rollback", settings=settings)
    assert back.outcome == "rolled-back" and served_stable(settings, MODEL) == v1
    assert int(client.get_model_version_by_alias(MODEL, CHAMPION).version) == v1

    moves = [
        (e.from_version, e.to_version, e.source)
        for e in history(settings, MODEL)
        if e.alias == CHAMPION
    ]
    # The UI moves (to v3, to v4) happened outside recops; the ledger has the reverts.
    assert moves[:4] == [
        (v2, v1, "cli"),
        (v4, v2, "registry-watch"),
        (v3, v2, "registry-watch"),
        (v1, v2, "nightly"),
    ]


def test_unblessed_needs_force(home: Path) -> None:
    settings = Settings.from_env()
    model = export_contract_model(home / "sm-bad", seed=9)
    bad = register(
        RegisterConfig(
            model_dir=str(model),
            model_key="bad",
            metrics={"recall_at_10": 0.0, "ndcg_at_10": 0.0},
            auto_promote=False,
        )
    )
    assert not bad.blessed
    with pytest.raises(PromotionError, match="not blessed"):
        promote(PromoteConfig(model_name=MODEL, version=bad.version), settings)


def test_pickle_in_a_registered_model_is_never_loaded(home: Path) -> None:
    settings = Settings.from_env()
    marker = home / "pwned"
    version = _register(home, "tampered", seed=4)
    # Tamper with the stored artifacts, as a compromised artifact store could.
    for tf2 in settings.mlflow_dir.rglob("tf2model"):
        (tf2 / "assets").mkdir(exist_ok=True)
        (tf2 / "assets" / "payload.pkl").write_bytes(pickle.dumps(_Marker(str(marker))))
    with pytest.raises(PromotionError, match="pickle"):
        promote(PromoteConfig(model_name=MODEL, version=version, canary_seconds=0.5), settings)
    assert not marker.exists()
    # A model folder with a pickle is refused at registration too.
    model = export_contract_model(home / "sm-pkl", seed=5)
    (model / "assets").mkdir(exist_ok=True)
    (model / "assets" / "x.bin").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match="pickle header"):
        register(RegisterConfig(model_dir=str(model), model_key="pkl", metrics=GOOD))
    assert not marker.exists()


def test_links_out_of_the_model_folder_are_refused_at_register_and_rollout(home: Path) -> None:
    settings = Settings.from_env()
    outside = home / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "secret.txt").write_text("not the model's")
    # At registration: a link that leaves the folder, as a `..` path in an archive would.
    model = export_contract_model(home / "sm-link", seed=6)
    (model / "assets").mkdir(exist_ok=True)
    (model / "assets" / "escape").symlink_to(outside)
    with pytest.raises(ValueError, match="escape is a link or escapes the model folder"):
        register(RegisterConfig(model_dir=str(model), model_key="link", metrics=GOOD))
    # At roll-out: a registered version whose stored artifacts were tampered with.
    version = _register(home, "linked", seed=7)
    for tf2 in settings.mlflow_dir.rglob("tf2model"):
        (tf2 / "assets").mkdir(exist_ok=True)
        link = tf2 / "assets" / "up"
        if not link.is_symlink():
            link.symlink_to(outside)
    with pytest.raises(PromotionError, match="link or escapes"):
        promote(PromoteConfig(model_name=MODEL, version=version, canary_seconds=0.5), settings)
    assert served_stable(settings, MODEL) != version


def test_watcher_trigger_fires_on_an_alias_move(home: Path) -> None:
    from recops.airflow_plugin import ChampionAliasTrigger

    settings = Settings.from_env()
    client = mlflow.MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    serving = served_stable(settings, MODEL)
    other = next(
        int(v.version)
        for v in client.search_model_versions(f"name='{MODEL}'")
        if int(v.version) != serving and v.tags.get("recops.blessed") == "true"
    )
    client.set_registered_model_alias(MODEL, CHAMPION, str(other))
    trigger = ChampionAliasTrigger(model_name=MODEL, poll_interval=0.1)
    classpath, kwargs = trigger.serialize()
    assert (
        classpath == "recops.airflow_plugin.ChampionAliasTrigger" and kwargs["model_name"] == MODEL
    )

    async def first_event() -> dict:
        agen = trigger.run()
        try:
            event = await asyncio.wait_for(agen.__anext__(), timeout=60)
        finally:
            await agen.aclose()
        return event.payload

    payload = asyncio.run(first_event())
    assert payload == {"model_name": MODEL, "version": other, "source": "registry-watch"}
    client.set_registered_model_alias(MODEL, CHAMPION, str(serving))


def test_concurrent_promotions_serialize(home: Path) -> None:
    """Two promotions at once: the lock runs them one after the other, the alias ends on
    the last one that passed, and it is what `stable` serves."""
    import threading

    settings = Settings.from_env()
    client = mlflow.MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    a, b, bad = (
        _register(home, "ca", seed=11),
        _register(home, "cb", seed=12),
        _register(home, "cbad", seed=13),
    )
    outcomes: dict[int, str] = {}
    finished: list[int] = []

    def run(version: int, slo: float) -> None:
        try:
            promote(
                PromoteConfig(
                    model_name=MODEL, version=version, canary_seconds=1.0, slo_p99_ms=slo
                ),
                settings,
            )
            outcomes[version] = "promoted"
        except PromotionError:
            outcomes[version] = "failed"
        finished.append(version)

    threads = [
        threading.Thread(target=run, args=(v, slo))
        for v, slo in ((a, 500.0), (b, 500.0), (bad, 0.001))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes == {a: "promoted", b: "promoted", bad: "failed"}
    last_passed = [v for v in finished if outcomes[v] == "promoted"][-1]
    assert served_stable(settings, MODEL) == last_passed
    assert int(client.get_model_version_by_alias(MODEL, CHAMPION).version) == last_passed
    # Serialized: no two promotions' ledger entries interleave into a state where champion
    # pointed at the failed version without being moved back.
    assert pending_alias_change(settings, MODEL) is None


def _register_ranker(home: Path, key: str, retrieval_version: int) -> int:
    """A blessed ranking version paired with ``retrieval_version``."""
    from recops.registry import GateConfig

    # The pairing is checked before any artifact is read, so any SavedModel will do.
    model = export_contract_model(home / f"sm-{key}", seed=11)
    return register(
        RegisterConfig(
            model_dir=str(model),
            model_key=key,
            model_name=Settings.from_env().ranking_model_name,
            metrics={"rmse": 1.0},
            lineage={"retrieval_version": retrieval_version},
            gate=GateConfig(kind="ranking"),
            auto_promote=False,
        )
    ).version


def _register_unblessed(home: Path, key: str, seed: int) -> int:
    refused = register(
        RegisterConfig(
            model_dir=str(export_contract_model(home / f"sm-{key}", seed=seed)),
            model_key=key,
            metrics={"recall_at_10": 0.0, "ndcg_at_10": 0.0},
            auto_promote=False,
        )
    )
    assert not refused.blessed
    return refused.version


def test_a_ranker_is_never_promoted_without_its_retriever(home: Path) -> None:
    settings = Settings.from_env()
    ranking = settings.ranking_model_name

    def ranker(key: str, retrieval_version: int) -> int:
        return _register_ranker(home, key, retrieval_version)

    refused = _register_unblessed(home, "unblessed-retriever", seed=12)
    orphan = ranker("orphan-ranker", refused)
    with pytest.raises(PromotionError, match=f"{MODEL} v{refused}, which the gate"):
        promote(PromoteConfig(model_name=ranking, version=orphan), settings)
    # A blessed retriever that does not serve: the ranker waits for it.
    blessed = _register(home, "paired-retriever", seed=13)
    waiting = ranker("waiting-ranker", blessed)
    with pytest.raises(PromotionError, match=f"promote {MODEL} v{blessed} first"):
        promote(PromoteConfig(model_name=ranking, version=waiting), settings)
    assert served_stable(settings, ranking) is None
    # The same rule, asked before a promotion is triggered (`recops run` and the demo
    # leave such a ranker where it is instead of failing the command).
    assert f"{MODEL} v{refused}, which the gate" in str(pair_refusal(settings, orphan))
    assert f"promote {MODEL} v{blessed} first" in str(pair_refusal(settings, waiting))


def test_a_failed_ranker_takes_the_retriever_of_its_run_back_with_it(home: Path) -> None:
    """``promote_step``: one run's models are one unit; the second fails, both go back."""
    from recops.pipeline_promote import promote_step

    settings = Settings.from_env()
    before = served_stable(settings, MODEL)
    assert before is not None
    retriever = _register(home, "unit-retriever", seed=21)
    # Its ranker fails: it was trained on the candidates of an unblessed retriever.
    orphan = _register_ranker(home, "unit-ranker", _register_unblessed(home, "unit-bad", 22))
    base = {"alias": "champion", "action": "promote", "force": False, "reason": "unit",
            "source": "nightly"}  # fmt: skip
    requests = [
        {**base, "model_name": MODEL, "version": retriever},
        {**base, "model_name": settings.ranking_model_name, "version": orphan},
    ]
    with pytest.raises(PromotionError, match="rolled back with it") as caught:
        promote_step(requests)
    assert f"{MODEL} back to v{before} (from v{retriever})" in caught.value.reasons
    assert served_stable(settings, MODEL) == before
    client = mlflow.MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    assert int(client.get_model_version_by_alias(MODEL, CHAMPION).version) == before


def test_a_retriever_asked_for_alone_moves_with_its_ranker(home: Path) -> None:
    """A UI trigger names retrieval only: its paired ranker comes, goes back and fails with it."""
    from recops.pipeline_promote import promote_step

    settings = Settings.from_env()
    ranking = settings.ranking_model_name
    client = mlflow.MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    base = {"alias": "champion", "force": False, "reason": "ui", "source": "ui"}

    def asked(action: str, version: int) -> list[dict[str, Any]]:
        return promote_step([{**base, "action": action, "model_name": MODEL, "version": version}])

    r1 = _register(home, "pair-r1", seed=31)
    k1 = _register_ranker(home, "pair-k1", r1)
    first = asked("promote", r1)
    assert [(r["model_name"], r["version"], r["outcome"]) for r in first] == [
        (MODEL, r1, "promoted"),
        (ranking, k1, "promoted"),
    ]
    assert (served_stable(settings, MODEL), served_stable(settings, ranking)) == (r1, k1)
    r2 = _register(home, "pair-r2", seed=32)
    k2 = _register_ranker(home, "pair-k2", r2)
    asked("promote", r2)
    assert (served_stable(settings, MODEL), served_stable(settings, ranking)) == (r2, k2)
    # A retry after the retriever moved (its ranker not yet) completes the unit.
    asked("rollback", r1)
    promote(PromoteConfig(model_name=MODEL, version=r2), settings)  # retrieval alone
    assert (served_stable(settings, MODEL), served_stable(settings, ranking)) == (r2, k1)
    retried = asked("promote", r2)
    assert [(r["model_name"], r["outcome"]) for r in retried] == [
        (MODEL, "already-serving"),
        (ranking, "promoted"),
    ]
    assert (served_stable(settings, MODEL), served_stable(settings, ranking)) == (r2, k2)
    # Back to r1: its ranker k1 is still on disk, so it goes back too.
    back = asked("rollback", r1)
    assert [(r["model_name"], r["outcome"]) for r in back] == [
        (MODEL, "rolled-back"),
        (ranking, "rolled-back"),
    ]
    assert (served_stable(settings, MODEL), served_stable(settings, ranking)) == (r1, k1)
    assert int(client.get_model_version_by_alias(ranking, CHAMPION).version) == k1

    # A pair whose ranker cannot serve: the retriever goes back with it.
    r3 = _register(home, "pair-r3", seed=33)
    k3 = _register_ranker(home, "pair-k3", r3)
    stored = [
        p for p in settings.mlflow_dir.rglob("tf2model") if _version_of(client, p, ranking) == k3
    ]
    assert stored, "found k3's stored SavedModel"
    for tf2 in stored:
        corrupt_variables(tf2)
    with pytest.raises(PromotionError, match="rolled back with it") as caught:
        asked("promote", r3)
    assert f"{MODEL} back to v{r1} (from v{r3})" in caught.value.reasons
    assert (served_stable(settings, MODEL), served_stable(settings, ranking)) == (r1, k1)


def test_a_rankers_smoke_requests_carry_an_empty_history_and_its_context(home: Path) -> None:
    """A ranker that takes ``history_item_ids`` (the history knob on) can be canaried."""
    from recops.promotion import smoke_requests
    from recops_models.contract import HISTORY_INPUT, HISTORY_PAD
    from recops_models.tf_env import tensorflow

    tf = tensorflow()
    signature = [
        tf.TensorSpec([None], tf.int64, name="user_id"),
        tf.TensorSpec([None, None], tf.int64, name="item_ids"),
        tf.TensorSpec([None, None], tf.int64, name=HISTORY_INPUT),
        tf.TensorSpec([None], tf.float32, name="user_events_7d"),
    ]

    class Ranker(tf.Module):
        def score(self, user_id: Any, item_ids: Any, history: Any, events: Any) -> Any:
            # Depends on every input, so a wrong feed would show in the outputs.
            seen = tf.reduce_sum(tf.cast(history >= 0, tf.float32), axis=1, keepdims=True)
            base = tf.cast(item_ids, tf.float32) + seen + events[:, None]
            return {"scores": base + tf.cast(user_id, tf.float32)[:, None]}

    module = Ranker()
    path = home / "sm-history-ranker"
    fn = tf.function(module.score, input_signature=signature)
    tf.saved_model.save(module, str(path), signatures={"serving_default": fn})

    settings = Settings.from_env()
    instances, expected = smoke_requests(settings, settings.ranking_model_name, str(path))
    assert instances and all(row[HISTORY_INPUT] == [HISTORY_PAD] for row in instances)
    assert all(isinstance(row["user_events_7d"], float) for row in instances)
    assert len(expected["scores"]) == len(instances)
