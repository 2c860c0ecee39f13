"""The model server as a real process, serving tiny real SavedModels of the contract.

One server runs for the whole module (``start_background`` with a temporary RECOPS_HOME
and free ports) and is stopped at the end. The SavedModels come from
``tests.support.contract_model`` (20 items, D=4, K=RETRIEVAL_K): ``serving_default``,
``user_embedding`` and ``item_embeddings``. Expected answers are computed by loading the
same SavedModel in this process.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from recops.config import RETRIEVAL_K, Settings
from recops.serving import models_config as mc
from recops.serving.client import ServingClient, ServingError
from recops.serving.rollout import RolloutConfig, RolloutError, rollout
from recops.serving.server import (
    DEFAULT_MAX_BODY_BYTES,
    WARMUP_FILE,
    is_running,
    start_background,
    stop_background,
)

from tests.support.contract_model import export_contract_model
from tests.support.stack import free_port

pytestmark = pytest.mark.integration

MODEL = "tiny"
SERVED = "recops_retrieval"
ALICE = {"user_id": 1, "age": 30.0, "gender": "F", "occupation": "writer"}
BOB = {"user_id": 7, "age": 45.0, "gender": "M", "occupation": "engineer"}


@dataclass(frozen=True)
class Env:
    settings: Settings
    client: ServingClient
    exports: Path
    #: version -> instances -> item_ids per row, from the SavedModel loaded in-process.
    expected: Callable[[int, list[dict[str, Any]]], list[list[int]]]

    @property
    def base(self) -> Path:
        return self.settings.model_base_path / MODEL

    def apply(self, versions: list[int], labels: dict[str, int] | None = None) -> None:
        """Serve ``tiny`` alone at ``versions``, as rollout does: write the file, reload."""
        entry = mc.make_model_config(
            name=MODEL, base_path=self.base, versions=versions, labels=labels
        )
        config = mc.with_model(mc.empty_config(), entry)
        mc.write_config(self.settings.models_config_path, config)
        self.client.reload_config(config)

    def top(self, reply: dict[str, Any]) -> list[list[int]]:
        return [row["item_ids"] for row in reply["predictions"]]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    import tensorflow as tf

    home = tmp_path_factory.mktemp("recops_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RECOPS_HOME", str(home))
        patch.setenv("RECOPS_GRPC_PORT", str(free_port()))
        patch.setenv("RECOPS_REST_PORT", str(free_port()))
        settings = Settings.from_env()
        exports = home / "exports"
        loaded = {}
        for version in (1, 2):
            export_contract_model(exports / f"v{version}", n_items=20, dim=4, seed=version)
            shutil.copytree(
                exports / f"v{version}", settings.model_base_path / MODEL / str(version)
            )
            loaded[version] = tf.saved_model.load(str(exports / f"v{version}"))

        def expected(version: int, instances: list[dict[str, Any]]) -> list[list[int]]:
            columns = {k: tf.constant([i[k] for i in instances]) for k in instances[0]}
            columns = {
                k: tf.cast(v, tf.int64) if v.dtype.is_integer else v for k, v in columns.items()
            }
            out = loaded[version].signatures["serving_default"](**columns)
            return [[int(i) for i in row] for row in out["item_ids"].numpy()]

        config = mc.with_model(
            mc.empty_config(),
            mc.make_model_config(
                name=MODEL,
                base_path=settings.model_base_path / MODEL,
                versions=[1],
                labels={"stable": 1},
            ),
        )
        mc.write_config(settings.models_config_path, config)
        pid = start_background(settings)
        client = ServingClient.from_settings(settings, timeout_s=60.0)
        try:
            yield Env(settings=settings, client=client, exports=exports, expected=expected)
        finally:
            client.close()
            assert stop_background(settings)
            assert not is_running(settings)
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)


def _http(
    env: Env, method: str, path: str, body: bytes | None = None
) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", env.settings.rest_port, timeout=60)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        conn.close()


# -- background helpers, status, metadata ------------------------------------------------------


def test_start_background_reuses_the_running_server(env: Env) -> None:
    assert is_running(env.settings)
    pid = int((env.settings.serving_dir / "server.pid").read_text())
    assert start_background(env.settings) == pid


def test_status_and_metadata(env: Env) -> None:
    status, body = _http(env, "GET", f"/v1/models/{MODEL}")
    assert status == 200
    assert body == {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    assert _http(env, "GET", f"/v1/models/{MODEL}/versions/1") == (200, body)
    assert _http(env, "GET", f"/v1/models/{MODEL}/labels/stable") == (200, body)
    assert env.client.model_status(MODEL) == {1: "AVAILABLE"}
    assert env.client.model_status_grpc(MODEL) == {1: "AVAILABLE"}

    meta = env.client.metadata(MODEL, label="stable")
    assert meta["model_spec"]["name"] == MODEL and meta["model_spec"]["version"] == "1"
    signatures = meta["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "user_embedding", "item_embeddings"} <= set(signatures)
    serving = signatures["serving_default"]
    assert {k: v["dtype"] for k, v in serving["inputs"].items()} == {
        "user_id": "DT_INT64",
        "age": "DT_FLOAT",
        "gender": "DT_STRING",
        "occupation": "DT_STRING",
    }
    dims = [d["size"] for d in serving["outputs"]["item_ids"]["tensor_shape"]["dim"]]
    assert dims == ["-1", str(RETRIEVAL_K)]


def test_grpc_metadata(env: Env) -> None:
    from tensorflow_serving.apis import get_model_metadata_pb2, prediction_service_pb2_grpc

    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = MODEL
    stub = prediction_service_pb2_grpc.PredictionServiceStub(env.client._grpc_channel())
    response = stub.GetModelMetadata(request, timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    assert response.model_spec.version.value == 1
    assert set(signatures.signature_def["serving_default"].outputs) == {"item_ids", "scores"}


# -- predict ------------------------------------------------------------------------------------


def test_rest_predict_row_format(env: Env) -> None:
    expected = env.expected(1, [ALICE, BOB])
    assert expected[0] != expected[1]
    for kwargs in ({}, {"version": 1}, {"label": "stable"}):
        reply = env.client.predict_rest(MODEL, [ALICE, BOB], **kwargs)
        assert env.top(reply) == expected
        assert all(len(row["scores"]) == RETRIEVAL_K for row in reply["predictions"])
    # One output: each prediction is the bare value.
    single = env.client.predict_rest(MODEL, [ALICE], signature_name="user_embedding")
    assert len(single["predictions"]) == 1 and len(single["predictions"][0]) == 4


def test_rest_predict_columnar_format(env: Env) -> None:
    inputs = {k: [ALICE[k], BOB[k]] for k in ALICE}
    reply = env.client.predict_rest(MODEL, inputs=inputs)
    assert reply["outputs"]["item_ids"] == env.expected(1, [ALICE, BOB])
    assert np.asarray(reply["outputs"]["scores"]).shape == (2, RETRIEVAL_K)
    single = env.client.predict_rest(MODEL, inputs=inputs, signature_name="user_embedding")
    assert np.asarray(single["outputs"]).shape == (2, 4)


def test_grpc_predict(env: Env) -> None:
    inputs = {
        "user_id": np.array([1, 7], dtype=np.int64),
        "age": np.array([30, 45], dtype=np.float32),
        "gender": np.array([b"F", b"M"], dtype=object),
        "occupation": np.array([b"writer", b"engineer"], dtype=object),
    }
    for kwargs in ({}, {"version": 1}, {"label": "stable"}):
        outputs = env.client.predict_grpc(MODEL, inputs, **kwargs)
        assert outputs["item_ids"].tolist() == env.expected(1, [ALICE, BOB])
        assert outputs["scores"].dtype == np.float32
        assert outputs["scores"].shape == (2, RETRIEVAL_K)
    filtered = env.client.predict_grpc(MODEL, inputs, output_filter=["item_ids"])
    assert set(filtered) == {"item_ids"}
    items = env.client.predict_grpc(MODEL, {}, signature_name="item_embeddings")
    assert items["item_ids"].tolist() == list(range(1, 21))
    assert items["embeddings"].shape == (20, 4)

    with pytest.raises(ServingError, match=r"to be int64 but int32") as info:
        env.client.predict_grpc(MODEL, {**inputs, "user_id": inputs["user_id"].astype(np.int32)})
    assert info.value.code == "INVALID_ARGUMENT"
    with pytest.raises(ServingError, match="Missing but required: {occupation}"):
        env.client.predict_grpc(MODEL, {k: v for k, v in inputs.items() if k != "occupation"})
    with pytest.raises(ServingError) as info:
        env.client.predict_grpc("nope", inputs)
    assert info.value.code == "NOT_FOUND"


# -- errors ---------------------------------------------------------------------------------------


def test_unknown_model_version_label_are_404(env: Env) -> None:
    body = json.dumps({"instances": [ALICE]}).encode()
    for method, path in [
        ("GET", "/v1/models/nope"),
        ("GET", "/v1/models/nope/metadata"),
        ("POST", "/v1/models/nope:predict"),
        ("GET", f"/v1/models/{MODEL}/versions/9"),
        ("POST", f"/v1/models/{MODEL}/versions/9:predict"),
        ("GET", f"/v1/models/{MODEL}/versions/9/metadata"),
        ("GET", f"/v1/models/{MODEL}/labels/canary"),
        ("POST", f"/v1/models/{MODEL}/labels/canary:predict"),
    ]:
        status, reply = _http(env, method, path, body if method == "POST" else None)
        assert status == 404, (path, reply)
        assert reply["error"], path
    with pytest.raises(ServingError) as info:
        env.client.predict_grpc(MODEL, {"user_id": np.array([1])}, label="canary")
    assert info.value.code == "NOT_FOUND"


def _instances(**change: Any) -> bytes:
    return json.dumps({"instances": [{**ALICE, **change}]}).encode()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_instances(user_id=1.5), "is not of expected type: int64"),
        (_instances(age="thirty"), "is not of expected type: float"),
        (_instances(user_id="seven"), "is not of expected type: int64"),
        (_instances(gender=1), "is not of expected type: string"),
        (json.dumps({"instances": [{"user_id": 1}]}).encode(), "keys must be equal to"),
        (json.dumps({"inputs": {"user_id": [1]}}).encode(), "Missing named input"),
        (_instances(age=[30, 31]), "shape"),
        (json.dumps({"signature_name": "nope", "instances": [ALICE]}).encode(), "not found"),
        (json.dumps({"signature_name": "item_embeddings", "instances": [1]}).encode(), "input map"),
        (b'{"instances": [1,', "JSON Parse error"),
        (b"", "empty"),
        (b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nesting depth"),
    ],
)
def test_bad_input_is_400(env: Env, body: bytes, message: str) -> None:
    status, reply = _http(env, "POST", f"/v1/models/{MODEL}:predict", body)
    assert status == 400
    assert message in reply["error"]


def test_oversized_body_is_413_and_the_server_survives(env: Env) -> None:
    body = b'{"instances": [' + b" " * DEFAULT_MAX_BODY_BYTES + b"1]}"
    status, reply = _http(env, "POST", f"/v1/models/{MODEL}:predict", body)
    assert status == 413
    assert "exceeds the limit" in reply["error"]
    assert is_running(env.settings)
    assert env.top(env.client.predict_rest(MODEL, [ALICE])) == env.expected(1, [ALICE])


# -- versions, labels, reloads ---------------------------------------------------------------


def test_label_moves_need_an_available_version(env: Env) -> None:
    top_v1, top_v2 = env.expected(1, [ALICE])[0], env.expected(2, [ALICE])[0]
    assert top_v1 != top_v2
    stop = threading.Event()
    failures: list[str] = []
    answers: list[list[int]] = []

    def hammer() -> None:  # requests in flight across every reload below
        client = ServingClient.from_settings(env.settings)
        while not stop.is_set():
            try:
                answers.append(env.top(client.predict_rest(MODEL, [ALICE], label="stable"))[0])
            except Exception as exc:  # noqa: BLE001 - collected, then asserted on
                failures.append(repr(exc))

    worker = threading.Thread(target=hammer)
    worker.start()
    try:
        # One step (load 2 and point the label at it) is refused and changes nothing.
        with pytest.raises(ServingError) as info:
            env.apply([1, 2], {"stable": 2})
        assert info.value.code == "FAILED_PRECONDITION"
        assert "not currently available" in info.value.message
        assert env.client.model_status(MODEL) == {1: "AVAILABLE"}

        # Two steps: load 2 with the label unchanged, then move the label.
        env.apply([1, 2], {"stable": 1})
        env.client.wait_available(MODEL, 2, timeout_s=60)
        assert env.client.model_status(MODEL) == {1: "AVAILABLE", 2: "AVAILABLE"}
        assert env.top(env.client.predict_rest(MODEL, [ALICE], label="stable"))[0] == top_v1
        # No version and no label: the latest AVAILABLE version.
        assert env.top(env.client.predict_rest(MODEL, [ALICE]))[0] == top_v2

        env.apply([1, 2], {"stable": 2})
        assert env.top(env.client.predict_rest(MODEL, [ALICE], label="stable"))[0] == top_v2

        env.apply([2], {"stable": 2})
        assert env.client.model_status(MODEL) == {1: "END", 2: "AVAILABLE"}
        with pytest.raises(ServingError) as info:
            env.client.predict_rest(MODEL, [ALICE], version=1)
        assert info.value.http_status == 404
    finally:
        stop.set()
        worker.join()
    assert failures == []
    assert answers and all(a in (top_v1, top_v2) for a in answers)


def test_reload_replaces_the_whole_config(env: Env) -> None:
    other = mc.make_model_config(name="other", base_path=env.base, versions=[1])
    config = mc.with_model(mc.empty_config(), other)
    env.client.reload_config(config)  # a new model: the reply waits until it loaded
    assert env.client.model_status("other") == {1: "AVAILABLE"}
    assert set(env.client.model_status(MODEL).values()) == {"END"}  # left out: unloaded
    with pytest.raises(ServingError) as info:
        env.client.predict_rest(MODEL, [ALICE])
    assert info.value.http_status == 404
    assert env.top(env.client.predict_rest("other", [ALICE])) == env.expected(1, [ALICE])
    # An invalid config is refused whole.
    bad = mc.with_model(config, mc.make_model_config(name="", base_path=env.base))
    with pytest.raises(ServingError, match="no name") as info:
        env.client.reload_config(bad)
    assert info.value.code == "INVALID_ARGUMENT"
    assert env.client.model_status("other") == {1: "AVAILABLE"}
    # Back to tiny@1 labelled stable: versions first, then the label.
    env.apply([1])
    env.apply([1], {"stable": 1})
    assert env.client.model_status(MODEL)[1] == "AVAILABLE"
    assert set(env.client.model_status("other").values()) == {"END"}


def test_a_failed_load_is_an_error_status(env: Env) -> None:
    broken = env.base / "7"
    shutil.copytree(env.exports / "v1", broken)
    (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
    env.apply([1, 7], {"stable": 1})
    with pytest.raises(ServingError, match="did not load"):
        env.client.wait_available(MODEL, 7, timeout_s=60)
    detail = env.client.version_status(MODEL)[7]
    assert detail["state"] == "END" and detail["error_code"] != "OK" and detail["error_message"]
    # The old version kept serving.
    assert env.top(env.client.predict_rest(MODEL, [ALICE], label="stable")) == env.expected(
        1, [ALICE]
    )
    env.apply([1], {"stable": 1})
    shutil.rmtree(broken)


# -- rollout -------------------------------------------------------------------------------------


def _rollout(env: Env, version: int, export: str) -> Any:
    config = RolloutConfig(
        model_name=SERVED,
        version=version,
        saved_model_dir=str(env.exports / export),
        smoke_instances=[ALICE, BOB],
        load_timeout_s=60.0,
    )
    return rollout(config)  # settings from the environment (RECOPS_HOME and ports)


def test_rollout_end_to_end_and_idempotent(env: Env) -> None:
    pid = int((env.settings.serving_dir / "server.pid").read_text())
    first = _rollout(env, 1, "v1")
    assert first.served_versions == [1]
    assert first.labels == {"stable": 1}
    assert first.smoke_top_item_ids == env.expected(1, [ALICE])[0]
    assert first.smoke_latency_ms > 0
    assert first.rest_url.endswith(f":{env.settings.rest_port}/v1/models/{SERVED}")
    assert first.grpc_target.endswith(f":{env.settings.grpc_port}")
    assert json.loads(json.dumps(first.to_dict()))["labels"] == {"stable": 1}
    version_dir = env.settings.model_base_path / SERVED / "1"
    assert (version_dir / WARMUP_FILE).is_file()
    # models.config is what the server runs, and the other model is still in it.
    config = mc.read_config(env.settings.models_config_path)
    assert [c.name for c in config.model_config_list.config] == [MODEL, SERVED]
    assert env.client.model_status(MODEL)[1] == "AVAILABLE"

    # Again: a no-op that still smoke-tests.
    stamp = (version_dir / "saved_model.pb").stat().st_mtime_ns
    again = _rollout(env, 1, "v1")
    assert (again.served_versions, again.labels) == ([1], {"stable": 1})
    assert again.smoke_top_item_ids == first.smoke_top_item_ids
    assert (version_dir / "saved_model.pb").stat().st_mtime_ns == stamp
    assert mc.read_config(env.settings.models_config_path) == config

    # A new version takes the label; the previous one stays loaded.
    second = _rollout(env, 2, "v2")
    assert second.served_versions == [1, 2]
    assert second.labels == {"stable": 2}
    assert second.smoke_top_item_ids == env.expected(2, [ALICE])[0]
    assert env.client.model_status(SERVED) == {1: "AVAILABLE", 2: "AVAILABLE"}
    # A version number with different content is refused; nothing changes.
    served = env.settings.models_config_path.read_text()
    with pytest.raises(RolloutError, match="different content"):
        _rollout(env, 1, "v2")
    assert env.settings.models_config_path.read_text() == served
    assert int((env.settings.serving_dir / "server.pid").read_text()) == pid


def test_rollout_of_a_corrupt_model_keeps_the_previous_config(env: Env) -> None:
    before = env.settings.models_config_path.read_text()
    corrupt = env.exports / "corrupt"
    shutil.copytree(env.exports / "v1", corrupt)
    # The signatures still parse (so the warmup is built) but the variables cannot load.
    for data in (corrupt / "variables").glob("variables.data-*"):
        data.write_bytes(b"\0garbage" * 10)
    with pytest.raises(RolloutError, match="version 3 failed") as info:
        _rollout(env, 3, "corrupt")
    assert "restored and reloaded" in str(info.value)
    assert env.settings.models_config_path.read_text() == before
    assert not (env.settings.model_base_path / SERVED / "3").exists()
    status = env.client.model_status(SERVED)
    assert status[1] == status[2] == "AVAILABLE"
    assert status.get(3, "END") == "END"
    reply = env.client.predict_rest(SERVED, [ALICE], label="stable")
    assert env.top(reply) == env.expected(2, [ALICE])

    # A SavedModel that does not even parse fails before anything is touched.
    (corrupt / "saved_model.pb").write_bytes(b"junk")
    with pytest.raises(RolloutError, match="not a readable SavedModel"):
        _rollout(env, 3, "corrupt")
    assert env.settings.models_config_path.read_text() == before


# -- policies, warmup, binding, load ----------------------------------------------------------


def test_latest_and_all_version_policies(env: Env) -> None:
    shutil.copytree(env.exports / "v2", env.base / "2", dirs_exist_ok=True)
    entry = mc.make_model_config(name=MODEL, base_path=env.base)
    entry.model_version_policy.latest.num_versions = 1
    env.client.reload_config(mc.with_model(mc.empty_config(), entry))
    env.client.wait_available(MODEL, 2, timeout_s=60)
    assert env.client.model_status(MODEL)[2] == "AVAILABLE"
    assert env.top(env.client.predict_rest(MODEL, [ALICE])) == env.expected(2, [ALICE])

    entry.model_version_policy.all.SetInParent()  # the oneof: "latest" is replaced
    env.client.reload_config(mc.with_model(mc.empty_config(), entry))
    env.client.wait_available(MODEL, 1, timeout_s=60)
    assert {v: s for v, s in env.client.model_status(MODEL).items() if s == "AVAILABLE"} == {
        1: "AVAILABLE",
        2: "AVAILABLE",
    }
    env.apply([1])
    env.apply([1], {"stable": 1})
    assert env.client.model_status(MODEL)[2] == "END"


def _warmup_record(signature_name: str, instances: list[dict[str, Any]]) -> bytes:
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    record = prediction_log_pb2.PredictionLog()
    request = record.predict_log.request
    request.model_spec.name = MODEL
    request.model_spec.signature_name = signature_name
    for key in instances[0]:
        values = [i[key] for i in instances]
        dtype = {str: tf.string, float: tf.float32}.get(type(values[0]), tf.int64)
        request.inputs[key].CopyFrom(tf.make_tensor_proto(values, dtype=dtype))
    return record.SerializeToString()


def test_warmup_requests_are_replayed_on_load(env: Env) -> None:
    import tensorflow as tf

    def version_with_warmup(version: int, records: list[bytes]) -> None:
        folder = env.base / str(version)
        shutil.copytree(env.exports / "v2", folder)
        (folder / WARMUP_FILE).parent.mkdir(parents=True)
        with tf.io.TFRecordWriter(str(folder / WARMUP_FILE)) as writer:
            for record in records:
                writer.write(record)

    # A warmup request the model cannot answer fails the load: proof that it ran.
    version_with_warmup(5, [_warmup_record("serving_default", [{"user_id": 1}])])
    version_with_warmup(6, [_warmup_record("serving_default", [ALICE, BOB])] * 3)
    try:
        env.apply([1, 5, 6], {"stable": 1})
        with pytest.raises(ServingError, match="did not load") as info:
            env.client.wait_available(MODEL, 5, timeout_s=60)
        assert "Missing but required" in info.value.message
        env.client.wait_available(MODEL, 6, timeout_s=60)
        assert env.top(env.client.predict_rest(MODEL, [ALICE], version=6)) == env.expected(
            2, [ALICE]
        )
    finally:
        env.apply([1], {"stable": 1})
        shutil.rmtree(env.base / "5")
        shutil.rmtree(env.base / "6")


def test_binds_loopback_by_default(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    import psutil

    monkeypatch.delenv("RECOPS_SERVING_HOST", raising=False)
    assert Settings.from_env().serving_host == "127.0.0.1"
    pid = int((env.settings.serving_dir / "server.pid").read_text())
    listening = {
        (c.laddr.ip, c.laddr.port)
        for c in psutil.Process(pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    }
    ports = {env.settings.grpc_port, env.settings.rest_port}
    assert {port for _, port in listening} >= ports
    # gRPC may report its IPv4 bind as the mapped ``::ffff:127.0.0.1``: still loopback only.
    for ip in {ip for ip, port in listening if port in ports}:
        address = ipaddress.ip_address(ip)
        mapped = getattr(address, "ipv4_mapped", None)
        assert (mapped or address) == ipaddress.ip_address("127.0.0.1"), ip


def test_endpoint_holds_a_target_qps_without_errors(env: Env) -> None:
    from recops.serving.loadtest import LoadConfig, run_load

    # Modest on purpose: the test machine is 2 shared cores; the 60 s run is the benchmark.
    for protocol, qps, seconds in (("rest", 100.0, 10.0), ("grpc", 100.0, 2.0)):
        result = run_load(
            LoadConfig(
                model=MODEL,
                instances=[ALICE],
                host="127.0.0.1",
                rest_port=env.settings.rest_port,
                grpc_port=env.settings.grpc_port,
                label="stable",
                qps=qps,
                duration_s=seconds,
                concurrency=8,
                protocol=protocol,
            )
        )
        assert result.errors == 0, result.error_samples
        assert result.sent == result.ok == round(qps * seconds)
        assert result.achieved_qps >= 0.9 * qps, result.to_dict()
        assert 0 < result.p50_ms <= result.p99_ms
