"""``recops.serving.grpc_api``: request tensors are read as ``tf.make_ndarray`` reads them."""

from __future__ import annotations

import numpy as np
import pytest
from recops.errors import ServingError
from recops.serving.client import array_to_tensor_proto
from recops.serving.codec import tensor_proto_to_array
from recops.serving.grpc_api import _input_array


@pytest.mark.parametrize(
    "array",
    [
        np.array([b"M"], dtype=object),
        np.array([[b"a", b"bc"], [b"", b"\xff\x00"]], dtype=object),
        np.array([], dtype=object).reshape(0, 3),
        np.array(b"x", dtype=object),
        np.array([[1, 2, 3]], dtype=np.int64),
        np.array([0.5, -1.0], dtype=np.float32),
    ],
)
def test_a_tensor_reads_as_make_ndarray_reads_it(array: np.ndarray) -> None:
    from recops_models.tf_env import tensorflow

    tf = tensorflow()
    for proto in (array_to_tensor_proto(array), tf.make_tensor_proto(array)):
        ours, theirs = _input_array(proto), tensor_proto_to_array(proto)
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape == array.shape
        assert ours.tolist() == theirs.tolist() == array.tolist()


def test_padded_or_short_strings_take_tensorflows_path() -> None:
    from recops_models.tf_env import tensorflow

    tf = tensorflow()
    padded = tf.make_tensor_proto([b"a"], dtype=tf.string, shape=[3])  # one value, three slots
    assert _input_array(padded).tolist() == [b"a", b"a", b"a"]
    proto = array_to_tensor_proto(np.array([b"a", b"b"], dtype=object))
    proto.tensor_shape.dim[0].size = 10**12  # claims far more than it carries
    with pytest.raises(ServingError, match="exceeds"):
        _input_array(proto)
