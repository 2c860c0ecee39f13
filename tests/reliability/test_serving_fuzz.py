"""Hostile input never takes the model server down.

One real server process (``start_background``, free ports) serves a tiny contract model.
Hand-picked attacks (CVE-2025-0649's deep JSON, a 10 MB body, a GET with a body, random
bytes on the gRPC wire...) and a hypothesis fuzz of the REST body parser must each get a
client error, never a crash: the server's pid is the same afterwards, its memory stays
within a bound, and it still answers correctly.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from recops.config import Settings
from recops.serving import models_config as mc
from recops.serving.client import ServingClient
from recops.serving.server import start_background, stop_background

from tests.support.contract_model import export_contract_model, offline_outputs
from tests.support.stack import free_port

MODEL = "fuzzed"
ALICE = {"user_id": 1, "age": 30.0, "gender": "F", "occupation": "writer"}
#: Memory a burst of bad requests may leave behind (allocator slack, thread stacks).
RSS_SLACK = 192 * 2**20


@dataclass(frozen=True)
class Server:
    settings: Settings
    pid: int
    #: ``item_ids`` for ALICE, computed offline from the served SavedModel.
    expected: list[list[int]]

    def process(self) -> psutil.Process:
        return psutil.Process(self.pid)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        conn: http.client.HTTPConnection | None = None,
    ) -> tuple[int, Any]:
        own = conn is None
        conn = conn or http.client.HTTPConnection("127.0.0.1", self.settings.rest_port, timeout=60)
        try:
            conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
            reply = conn.getresponse()
            return reply.status, json.loads(reply.read())
        finally:
            if own:
                conn.close()

    def assert_healthy(self) -> None:
        assert self.process().is_running() and self.process().status() != psutil.STATUS_ZOMBIE
        with ServingClient.from_settings(self.settings) as client:
            reply = client.predict_rest(MODEL, [ALICE], label="stable")
        assert [row["item_ids"] for row in reply["predictions"]] == self.expected


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("fuzz_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RECOPS_HOME", str(home))
        patch.setenv("RECOPS_GRPC_PORT", str(free_port()))
        patch.setenv("RECOPS_REST_PORT", str(free_port()))
        settings = Settings.from_env()
        export = export_contract_model(home / "export", n_items=20, dim=4, seed=1)
        shutil.copytree(export, settings.model_base_path / MODEL / "1")
        entry = mc.make_model_config(
            name=MODEL,
            base_path=settings.model_base_path / MODEL,
            versions=[1],
            labels={"stable": 1},
        )
        mc.write_config(settings.models_config_path, mc.with_model(mc.empty_config(), entry))
        pid = start_background(settings)
        try:
            expected = offline_outputs(export, [ALICE])["item_ids"]
            running = Server(settings=settings, pid=pid, expected=expected)
            running.assert_healthy()
            yield running
        finally:
            stop_background(settings)


def _instance(**change: Any) -> bytes:
    return json.dumps({"instances": [{**ALICE, **change}]}).encode()


PREDICT = f"/v1/models/{MODEL}:predict"
ATTACKS: list[tuple[str, str, str, bytes | None, int]] = [
    ("wrong dtype", "POST", PREDICT, _instance(age="thirty"), 400),
    ("float for int64", "POST", PREDICT, _instance(user_id=1.5), 400),
    ("wrong shape", "POST", PREDICT, _instance(age=[[30]]), 400),
    ("missing input", "POST", PREDICT, json.dumps({"instances": [{"age": 3}]}).encode(), 400),
    ("not an object", "POST", PREDICT, b"[1, 2, 3]", 400),
    ("malformed JSON", "POST", PREDICT, b'{"instances": [{"age": }', 400),
    ("not UTF-8", "POST", PREDICT, b'{"instances": ["\xff\xfe"]}', 400),
    (
        "100k-deep JSON (CVE-2025-0649)",
        "POST",
        PREDICT,
        b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        400,
    ),
    ("100k-deep objects", "POST", PREDICT, b'{"a":' * 100_000 + b"1" + b"}" * 100_000, 400),
    ("10 MB body", "POST", PREDICT, b'{"instances": [' + b"0," * 5_000_000 + b"0]}", 413),
    ("unknown model", "POST", "/v1/models/nope:predict", _instance(), 404),
    ("unknown version", "POST", f"/v1/models/{MODEL}/versions/99:predict", _instance(), 404),
    ("unknown label", "POST", f"/v1/models/{MODEL}/labels/nope:predict", _instance(), 404),
    ("unknown model status", "GET", "/v1/models/nope", None, 404),
    ("unknown label metadata", "GET", f"/v1/models/{MODEL}/labels/nope/metadata", None, 404),
    ("malformed path", "POST", f"/v1/models/{MODEL}:explode", _instance(), 400),
    ("not the API", "GET", "/etc/passwd", None, 404),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [a[1:] for a in ATTACKS],
    ids=[a[0] for a in ATTACKS],
)
def test_attack_gets_a_client_error(
    server: Server, method: str, path: str, body: bytes | None, status: int
) -> None:
    got, reply = server.request(method, path, body)
    assert got == status, reply
    assert isinstance(reply, dict) and reply["error"]


def test_a_get_with_a_body_is_answered_and_the_connection_stays_usable(server: Server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.settings.rest_port, timeout=60)
    try:
        status, reply = server.request("GET", f"/v1/models/{MODEL}", _instance(), conn)
        assert status == 200 and reply["model_version_status"][0]["state"] == "AVAILABLE"
        # The body was consumed, not read as the next request on this keep-alive connection.
        status, reply = server.request("POST", PREDICT, _instance(), conn)
        assert status == 200 and len(reply["predictions"]) == 1
        status, reply = server.request("PUT", PREDICT, _instance(), conn)
        assert status == 501 and "not served" in reply["error"]
    finally:
        conn.close()


def test_random_bytes_over_grpc_are_refused(server: Server) -> None:
    import grpc

    rng = random.Random(0)
    rss_before = server.process().memory_info().rss
    target = f"127.0.0.1:{server.settings.grpc_port}"
    methods = [
        "/tensorflow.serving.PredictionService/Predict",
        "/tensorflow.serving.PredictionService/GetModelMetadata",
        "/tensorflow.serving.ModelService/GetModelStatus",
    ]
    codes = set()
    with grpc.insecure_channel(target) as channel:
        for index in range(60):
            method = methods[index % len(methods)]
            call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
            payload = rng.randbytes(rng.choice([1, 7, 64, 1024, 65536]))
            with pytest.raises(grpc.RpcError) as info:
                call(payload, timeout=30)
            codes.add(info.value.code())
    # Every reply is an application error; none is the server going away.
    assert grpc.StatusCode.UNAVAILABLE not in codes
    assert codes <= {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.UNIMPLEMENTED,
    }, codes
    assert server.process().memory_info().rss < rss_before + RSS_SLACK
    server.assert_healthy()


def test_hostile_tensor_protos_are_invalid_argument(server: Server) -> None:
    import grpc
    from tensorflow.core.framework import tensor_pb2, types_pb2
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    def request(dims: list[int], **values: Any) -> Any:
        proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT64, **values)
        for size in dims:
            proto.tensor_shape.dim.add(size=size)
        message = predict_pb2.PredictRequest()
        message.model_spec.name = MODEL
        for name in ALICE:
            message.inputs[name].CopyFrom(proto)
        return message

    hostile = [
        request([10**12], int64_val=[1]),  # one value "broadcast" to a terabyte
        request([-1], int64_val=[1]),
        request([3], int64_val=[1, 2]),  # fewer values than the shape says, not broadcastable
    ]
    with grpc.insecure_channel(f"127.0.0.1:{server.settings.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for message in hostile:
            with pytest.raises(grpc.RpcError) as info:
                stub.Predict(message, timeout=30)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    server.assert_healthy()


_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
_JSON = st.recursive(
    _LEAVES,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=24,
)
_NEAR_VALID = st.fixed_dictionaries(
    {
        "instances": st.lists(
            st.fixed_dictionaries(
                {
                    "user_id": _LEAVES | st.lists(_LEAVES, max_size=3),
                    "age": st.integers(min_value=-(2**64), max_value=2**64) | _LEAVES,
                    "gender": st.text(max_size=4) | _LEAVES,
                    "occupation": st.text(max_size=8) | st.just({"b64": "d3JpdGVy"}),
                }
            ),
            max_size=4,
        )
    },
    optional={"signature_name": st.sampled_from(["", "serving_default", "user_embedding", "x"])},
)
_BODIES = (
    _JSON.map(lambda v: json.dumps(v).encode())
    | st.fixed_dictionaries({"instances": _JSON}).map(lambda v: json.dumps(v).encode())
    | st.fixed_dictionaries({"inputs": _JSON}).map(lambda v: json.dumps(v).encode())
    | _NEAR_VALID.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=512)
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(body=_BODIES, path=st.sampled_from([PREDICT, f"/v1/models/{MODEL}/labels/stable:predict"]))
def test_fuzzed_predict_bodies_get_json_answers(server: Server, body: bytes, path: str) -> None:
    status, reply = server.request("POST", path, body)
    assert status in {200, 400, 404, 413}, (status, reply)
    assert isinstance(reply, dict)
    if status == 200:
        assert set(reply) <= {"predictions", "outputs"} and reply
    else:
        assert isinstance(reply["error"], str) and reply["error"]


def test_pid_and_memory_survive_everything(server: Server) -> None:
    # Runs last in this module: the same process served every attack above.
    assert int((server.settings.serving_dir / "server.pid").read_text()) == server.pid
    rss = server.process().memory_info().rss
    assert rss < 2 * 2**30, f"server RSS {rss // 2**20} MiB after the fuzzing"
    before = rss
    for _ in range(3):  # the same hostile burst again must not grow memory
        for _name, method, path, body, _status in ATTACKS:
            server.request(method, path, body)
    assert server.process().memory_info().rss < before + RSS_SLACK
    server.assert_healthy()
    assert os.getpid() != server.pid
