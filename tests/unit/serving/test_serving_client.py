"""Unit tests for ``recops.serving.client``: endpoints from settings, ``host:port`` parsing.

No server runs here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest


def test_clients_follow_the_real_tf_serving_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from recops.config import Settings
    from recops.serving.client import ServingClient, external_server, split_host_port

    for key in ("RECOPS_TFSERVING_GRPC", "RECOPS_TFSERVING_REST", "RECOPS_SERVING_HOST"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RECOPS_GRPC_PORT", "18500")
    monkeypatch.setenv("RECOPS_REST_PORT", "18501")
    local = Settings.from_env()
    assert not external_server(local)
    client = ServingClient.from_settings(local)
    assert (client.grpc_target, client.rest_base) == ("127.0.0.1:18500", "http://127.0.0.1:18501")

    monkeypatch.setenv("RECOPS_TFSERVING_GRPC", "tfs.internal:9000")
    monkeypatch.setenv("RECOPS_TFSERVING_REST", "[::1]:9001")
    remote = Settings.from_env()
    assert external_server(remote)
    client = ServingClient.from_settings(remote)
    assert client.grpc_target == "tfs.internal:9000"
    assert client.model_url("m", label="stable") == "http://[::1]:9001/v1/models/m/labels/stable"

    monkeypatch.delenv("RECOPS_TFSERVING_REST")
    client = ServingClient.from_settings(Settings.from_env())
    assert client.rest_base == "http://tfs.internal:8501"  # TF Serving's default REST port

    assert split_host_port("h:1", name="X") == ("h", 1)
    for value in ("h", "h:0", "h:port", ":8500", "h:70000"):
        with pytest.raises(ValueError, match="X="):
            split_host_port(value, name="X")


@pytest.mark.parametrize(
    "value",
    [
        np.array([7], dtype=np.int64),
        np.array([[5, 3, -1]], dtype=np.int64),
        np.array([math.nan, 1.5], dtype=np.float32),
        np.array([[0.25]], dtype=np.float64),
        np.array([b"F", b""], dtype=object),
        np.array(["x", "\u00e9"]),
        np.array([[True, False]]),
        np.zeros((1, 0), dtype=np.int64),
    ],
)
def test_tensor_protos_are_what_tensorflow_writes_and_reads(value: np.ndarray) -> None:
    from recops.serving.client import array_to_tensor_proto, tensor_proto_to_ndarray
    from recops_models.tf_env import tensorflow

    tf = tensorflow()
    ours, theirs = array_to_tensor_proto(value), tf.make_tensor_proto(value)
    assert ours.dtype == theirs.dtype
    assert [d.size for d in ours.tensor_shape.dim] == list(value.shape)
    # Each side reads what the other writes, to the same values and shape.
    for read in (tensor_proto_to_ndarray(ours), tf.make_ndarray(ours)):
        np.testing.assert_array_equal(read, tf.make_ndarray(theirs))
        assert read.shape == value.shape
    if value.dtype.kind not in "OSU":
        assert tensor_proto_to_ndarray(theirs).dtype == value.dtype


def test_a_tensor_proto_whose_shape_lies_about_its_bytes_is_refused() -> None:
    from recops.serving.client import array_to_tensor_proto, tensor_proto_to_ndarray

    proto = array_to_tensor_proto(np.array([[1, 2, 3]], dtype=np.int64))
    proto.tensor_shape.dim[1].size = 10**9  # claims a billion elements, carries three
    with pytest.raises(ValueError):
        tensor_proto_to_ndarray(proto)
    proto.tensor_shape.dim[1].size = -1  # numpy would read -1 as "infer"
    with pytest.raises(ValueError, match="negative dimension"):
        tensor_proto_to_ndarray(proto)
