"""The recommendation service end to end: real uvicorn, HTTP, model server and Feast.

One home for the module: synthetic MovieLens-shaped data published and featurized (the
online store holds profiles and histories), a tiny retrieval SavedModel that takes
``history_item_ids`` and masks them (as the two-tower's signature does) served as
``stable`` by the local model server, and the service started detached with
``recops.service.start_service``. Each test speaks HTTP to it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from recops.config import Settings

from tests.support.stack import free_port

pytestmark = pytest.mark.integration

N_ITEMS = 30
MASKED_SCORE = -1.0e9


def export_history_model(path: Path, user_features: list[Any], *, n_items: int, seed: int) -> Path:
    """A tiny retrieval SavedModel with the history contract: seen items score ``MASKED_SCORE``."""
    from recops_models.tf_env import tensorflow

    tf = tensorflow()
    gen = tf.random.Generator.from_seed(seed)
    signature = [
        tf.TensorSpec([None], tf.int64, name="user_id"),
        *(tf.TensorSpec([None], tf.string if f.is_string else tf.float32, name=f.name)
          for f in user_features),
        tf.TensorSpec([None, None], tf.int64, name="history_item_ids"),
    ]  # fmt: skip

    class Model(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.users = tf.Variable(gen.normal([64, 4]))
            self.items = tf.Variable(gen.normal([n_items, 4]))
            self.ids = tf.constant(list(range(1, n_items + 1)), dtype=tf.int64)

        def serve(self, user_id: Any, *rest: Any) -> dict[str, Any]:
            history = rest[-1]
            scores = tf.matmul(tf.gather(self.users, user_id % 64), self.items, transpose_b=True)
            seen = tf.reduce_any(tf.equal(history[:, :, None], self.ids[None, None, :]), axis=1)
            scores = tf.where(seen, MASKED_SCORE, scores)
            top, idx = tf.math.top_k(scores, n_items)
            return {"item_ids": tf.gather(self.ids, idx), "scores": top}

    module = Model()
    fn = tf.function(module.serve, input_signature=signature)
    tf.saved_model.save(module, str(path), signatures={"serving_default": fn})
    return path


@dataclass(frozen=True)
class Env:
    settings: Settings
    http: httpx.Client

    def recommend(self, user: int, k: int = 10) -> dict[str, Any]:
        reply = self.http.get("/v1/recommendations", params={"user_id": user, "k": k})
        assert reply.status_code == 200, reply.text
        body: dict[str, Any] = reply.json()
        return body


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    from recops.data import publish, synthesize
    from recops.features import FeaturesConfig, build_features
    from recops.layout import active_layout
    from recops.service.daemon import service_url, start_service, stop_service
    from recops.serving import models_config as mc
    from recops.serving.server import start_background, stop_background

    root = tmp_path_factory.mktemp("service")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECOPS_HOME", str(root / "home"))
        for name in ("RECOPS_REST_PORT", "RECOPS_GRPC_PORT", "RECOPS_RECOMMEND_PORT"):
            mp.setenv(name, str(free_port()))
        mp.delenv("RECOPS_EVENTS_TOKEN", raising=False)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        settings = Settings.from_env()
        inter, users, items = synthesize(rows=600, users=20, items=N_ITEMS, days=3, seed=5)
        published = publish(settings, inter, users, items, source="test")
        end = datetime.fromisoformat(published.last_date).replace(tzinfo=UTC) + timedelta(days=1)
        build_features(
            FeaturesConfig(
                interval_start=end - timedelta(days=1), interval_end=end, output_dir=str(root / "f")
            ),
            settings,
        )
        layout = active_layout(settings)
        base = settings.model_base_path / settings.model_name
        export_history_model(base / "1", list(layout.user_features), n_items=N_ITEMS, seed=1)
        entry = mc.make_model_config(
            name=settings.model_name, base_path=base, versions=[1], labels={"stable": 1}
        )
        mc.write_config(settings.models_config_path, mc.with_model(mc.empty_config(), entry))
        start_background(settings)
        try:
            start_service(settings)
            with httpx.Client(base_url=service_url(settings), timeout=30.0) as http:
                yield Env(settings=settings, http=http)
        finally:
            stop_service(settings)
            stop_background(settings)


def _seen(settings: Settings, user: int) -> set[int]:
    from recops.features.history import read_histories, seen_item_ids

    return set(seen_item_ids(read_histories(settings, [user])[user], ()))


def test_health_and_versions(env: Env) -> None:
    reply = env.http.get("/healthz")
    assert reply.status_code == 200, reply.text
    assert reply.json()["model_versions"] == {"retrieval": 1, "ranking": None}


def test_no_user_gets_an_item_already_seen(env: Env) -> None:
    from recops.serving.recommend import published_events

    events = published_events(env.settings)
    users = sorted(int(u) for u in events["user_id"].unique())
    for user in users:
        body = env.recommend(user)
        ids = [item["item_id"] for item in body["items"]]
        seen = set(events.loc[events["user_id"] == user, "item_id"].astype(int))
        assert len(ids) == min(10, N_ITEMS - len(seen)), (user, ids)
        assert not seen & set(ids), f"user {user} got seen items {seen & set(ids)}"
        assert body["model_versions"]["retrieval"] == 1
        assert all(item["score"] > MASKED_SCORE / 2 for item in body["items"])
        assert {item["source"] for item in body["items"]} <= {"retrieval", "popularity"}
        assert all("title" in item for item in body["items"]), body["items"][0]


def test_a_pushed_event_removes_the_item_within_a_second(env: Env) -> None:
    from recops.data.event_log import event_log_dir

    user = 3
    top = env.recommend(user)["items"][0]["item_id"]
    now = int(time.time())
    event = {"user_id": user, "item_id": top, "rating": 4, "timestamp": now}
    reply = env.http.post("/v1/events", json=[event])
    assert reply.status_code == 200, reply.text
    acked = time.monotonic()
    assert reply.json() == {"accepted": 1}
    while True:
        ids = [item["item_id"] for item in env.recommend(user)["items"]]
        if top not in ids:
            break
        assert time.monotonic() - acked < 1.0, f"item {top} still recommended after 1 s"
        time.sleep(0.05)
    assert top in _seen(env.settings, user)
    day = datetime.fromtimestamp(now, tz=UTC).date().isoformat()
    lines = [
        json.loads(line)
        for path in event_log_dir(env.settings, day).glob("*.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert any(r["user_id"] == user and r["item_id"] == top for r in lines), lines[-3:]


def test_an_unknown_user_with_pushed_history_gets_the_model(env: Env) -> None:
    user = 900  # an integer key the data never had
    cold = env.recommend(user)
    assert {item["source"] for item in cold["items"]} == {"popularity"}
    first = cold["items"][0]["item_id"]
    event = {"user_id": user, "item_id": first, "rating": 5, "timestamp": int(time.time())}
    assert env.http.post("/v1/events", json=[event]).status_code == 200
    warm = env.recommend(user)
    assert {item["source"] for item in warm["items"]} == {"retrieval"}
    assert first not in [item["item_id"] for item in warm["items"]]


def test_a_bad_event_is_refused_naming_it_and_nothing_is_written(env: Env) -> None:
    good = {"user_id": 4, "item_id": 2, "rating": 3, "timestamp": int(time.time())}
    bad = {**good, "rating": 42}
    before = _seen(env.settings, 4)
    reply = env.http.post("/v1/events", json=[good, bad])
    assert reply.status_code == 422
    body = reply.json()
    assert body["index"] == 1 and body["field"] == "rating", body
    assert "rating" in body["detail"]
    assert _seen(env.settings, 4) == before
    # An item outside the catalogue would block the nightly's whole day: refused too.
    outside = {**good, "item_id": 99_999}
    reply = env.http.post("/v1/events", json=[good, outside])
    assert reply.status_code == 422
    body = reply.json()
    assert (body["index"], body["field"], body["value"]) == (1, "item_id", 99_999), body
    assert "catalogue" in body["detail"]
    assert _seen(env.settings, 4) == before


def test_metrics_parse_with_the_prometheus_parser(env: Env) -> None:
    env.recommend(1)
    text = env.http.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    stages = {
        s.labels["stage"]
        for s in families["recops_service_stage_seconds"].samples
        if s.name.endswith("_count")
    }
    assert {"key", "features", "history", "retrieval", "attributes"} <= stages
    routes = {
        s.labels["route"]: s.value
        for s in families["recops_service_requests"].samples
        if s.name.endswith("_total") and s.labels["status"] == "200"
    }
    assert routes["/v1/recommendations"] >= 1
    versions = {s.labels["role"]: s.value for s in families["recops_service_model_version"].samples}
    assert versions["retrieval"] == 1.0
    assert "recops_service_candidate_popularity" in families
    assert "recops_service_score" in families


def test_a_rollout_and_a_rollback_under_load_fail_no_request(env: Env) -> None:
    """A client hammers the service while v2 is canaried to ``stable`` and rolled back.

    The canary is also compared through the service itself: the same users on
    ``variant=stable`` (v1) and ``variant=canary`` (v2).
    """
    import threading

    from recops.layout import active_layout
    from recops.promotion import service_probe
    from recops.service.daemon import service_url
    from recops.serving.rollout import rollback, rollout
    from recops.serving.rollout_config import RollbackConfig, RolloutConfig

    settings = env.settings
    layout = active_layout(settings)
    v2 = export_history_model(
        settings.home / "exports" / "v2", list(layout.user_features), n_items=N_ITEMS, seed=2
    )
    profile = {f.name: ("" if f.is_string else 0.0) for f in layout.user_features}
    smoke = [{"user_id": 1, **profile, "history_item_ids": [1, 2]}]
    served: list[int] = []
    failures: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=service_url(settings), timeout=30.0) as http:
            while not stop.is_set():
                try:
                    reply = http.get("/v1/recommendations", params={"user_id": 5, "k": 5})
                    if reply.status_code != 200:
                        failures.append(f"{reply.status_code}: {reply.text[:200]}")
                    else:
                        served.append(reply.json()["model_versions"]["retrieval"])
                except httpx.HTTPError as exc:  # collected, then asserted on
                    failures.append(repr(exc))
                time.sleep(0.01)

    def serves(version: int) -> bool:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if env.recommend(5)["model_versions"]["retrieval"] == version:
                return True
            time.sleep(0.1)
        return False

    probe = service_probe(settings, settings.model_name)
    assert probe is not None, "this home's service was not found"
    assert probe.role == "retrieval" and len(probe.users) == 20  # every user of the dataset
    worker = threading.Thread(target=hammer, name="hammer")
    worker.start()
    try:
        out = rollout(
            RolloutConfig(
                model_name=settings.model_name,
                version=2,
                saved_model_dir=str(v2),
                smoke_instances=smoke,
                canary_seconds=0.5,
                slo_p99_ms=5000.0,  # shared cores: latency is reported, not gated here
                service=probe,
            ),
            settings,
        )
        assert out.labels == {"stable": 2}
        through = out.infra_validation["service"]
        assert through["versions"]["stable"]["retrieval"] == 1
        assert through["versions"]["canary"]["retrieval"] == 2
        assert through["errors"] == {"stable": 0, "canary": 0}
        assert through["users"] == 20 and 0.0 <= through["top10_overlap"] <= 1.0
        assert through["score_psi"] is not None
        # The probe's canary requests are counted as canary: stable's series stay users'.
        families = {
            f.name: f for f in text_string_to_metric_families(env.http.get("/metrics").text)
        }
        canary = [
            s.value
            for s in families["recops_service_requests"].samples
            if s.name.endswith("_total")
            and s.labels["variant"] == "canary"
            and s.labels["route"] == "/v1/recommendations"
        ]
        assert sum(canary) >= 20, canary
        assert serves(2), "the service never picked up the new stable version"
        back = rollback(
            RollbackConfig(model_name=settings.model_name, to_version=1, smoke_instances=smoke),
            settings,
        )
        assert back.labels == {"stable": 1}
        assert serves(1), "the service never picked up the rollback"
    finally:
        stop.set()
        worker.join()
    assert failures == []
    assert {1, 2} <= set(served), "the hammer saw both versions serve"
    assert len(served) > 20


def test_a_canary_too_slow_through_the_service_is_rolled_back(env: Env) -> None:
    """The model server passes the canary; the service's answers miss the SLO: rejected."""
    from recops.errors import RolloutError
    from recops.layout import active_layout
    from recops.promotion import served_stable, service_probe
    from recops.serving.rollout import rollout
    from recops.serving.rollout_config import RolloutConfig

    settings = env.settings
    before = served_stable(settings, settings.model_name)
    v9 = export_history_model(
        settings.home / "exports" / "v9",
        list(active_layout(settings).user_features),
        n_items=N_ITEMS,
        seed=9,
    )
    profile = {f.name: ("" if f.is_string else 0.0) for f in active_layout(settings).user_features}
    with pytest.raises(RolloutError) as caught:
        rollout(
            RolloutConfig(
                model_name=settings.model_name,
                version=9,
                saved_model_dir=str(v9),
                smoke_instances=[{"user_id": 1, **profile, "history_item_ids": [1]}],
                canary_seconds=0,  # no load test: the service's own latency decides
                slo_p99_ms=0.01,
                service=service_probe(settings, settings.model_name),
            ),
            settings,
        )
    assert caught.value.rolled_back
    assert any("through the service exceeds the SLO" in r for r in caught.value.reasons)
    assert served_stable(settings, settings.model_name) == before
    assert not (settings.model_base_path / settings.model_name / "9").exists()
    # Until the service's next refresh a canary request may still name v9 (and fail:
    # the server dropped it); then stable answers it. Stable requests never noticed.
    deadline, answered = time.monotonic() + 15, None
    while time.monotonic() < deadline and answered != before:
        reply = env.http.get("/v1/recommendations", params={"user_id": 1, "variant": "canary"})
        answered = reply.json()["model_versions"]["retrieval"] if reply.is_success else None
        time.sleep(0.2)
    assert answered == before
