"""gRPC front end: TF Serving's ``PredictionService`` and ``ModelService`` over a manager.

``GrpcServices`` implements ``Predict``, ``GetModelMetadata``, ``GetModelStatus`` and
``HandleReloadConfigRequest`` (the others answer UNIMPLEMENTED) for grpc's generic
registration. ``status_response`` and ``metadata_response`` build the response protos and
are shared with the REST front end, which answers the same messages as JSON.

grpc, TensorFlow and the ``tensorflow_serving`` protos are imported inside the methods.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from recops_models.tf_env import tensorflow

from recops.errors import ServingError
from recops.serving.client import (
    RAW_TENSOR_DTYPES,
    array_to_tensor_proto,
    tensor_proto_to_ndarray,
)
from recops.serving.codec import tensor_proto_to_array
from recops.serving.manager import ModelManager, VersionStatus
from recops.serving.servable import DEFAULT_SIGNATURE, Servable
from recops.serving.status import error_from_exception, grpc_code, invalid

if TYPE_CHECKING:
    from tensorflow_serving.apis.model_pb2 import ModelSpec

__all__ = [
    "GrpcServices",
    "metadata_response",
    "spec_version_and_label",
    "status_response",
]

log = logging.getLogger("recops.serving")

_DT_STRING = 7  # tensorflow/core/framework/types.proto


def spec_version_and_label(spec: ModelSpec) -> tuple[int | None, str | None]:
    """The version or the label a ``ModelSpec`` addresses (neither: the latest)."""
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return int(spec.version.value), None
    if choice == "version_label":
        return None, str(spec.version_label)
    return None, None


def status_response(statuses: list[VersionStatus]) -> Any:
    """A ``GetModelStatusResponse`` listing ``statuses``."""
    tensorflow()  # the tensorflow_serving protos import TensorFlow: select tf_keras first
    from tensorflow_serving.apis import get_model_status_pb2

    response = get_model_status_pb2.GetModelStatusResponse()
    for status in statuses:
        item = response.model_version_status.add()
        item.version = status.version
        item.state = get_model_status_pb2.ModelVersionStatus.State.Value(status.state)
        item.status.error_code = grpc_code(status.error_code).value[0]
        item.status.error_message = status.error_message
    return response


def metadata_response(servable: Servable, fields: Sequence[str]) -> Any:
    """A ``GetModelMetadataResponse`` with the servable's SignatureDefs (the one field)."""
    tensorflow()  # the tensorflow_serving protos import TensorFlow: select tf_keras first
    from tensorflow_serving.apis import get_model_metadata_pb2

    if not fields:
        raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
    for name in fields:
        if name != "signature_def":
            raise invalid(f"Metadata field {name} is not supported")
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, value in servable.signature_defs.items():
        signature_map.signature_def[key].CopyFrom(value)
    response.metadata["signature_def"].Pack(signature_map)
    return response


@functools.cache
def _predict_pb2() -> Any:
    """``tensorflow_serving.apis.predict_pb2``, imported once (TensorFlow with tf_keras first)."""
    tensorflow()
    from tensorflow_serving.apis import predict_pb2

    return predict_pb2


def _input_array(proto: Any) -> Any:
    """A request's ``TensorProto`` as an array: raw ``tensor_content`` read in place.

    What clients write for numeric inputs (``tf.make_tensor_proto``, ours) is read with
    ``np.frombuffer``, which holds exactly the bytes sent, so a shape that claims more
    elements than it carries is refused by the reshape. Strings with one value per
    element (what a client writes for a string tensor) become an object array of
    ``bytes`` here, as ``tf.make_ndarray`` makes them, without its per-call overhead;
    anything else (``*_val`` fields, padded strings) goes through
    ``tensor_proto_to_array`` and its size guard.
    """
    if proto.tensor_content and proto.dtype in RAW_TENSOR_DTYPES:
        try:
            return tensor_proto_to_ndarray(proto)
        except ValueError as exc:
            raise invalid(f"Malformed TensorProto: {exc}") from exc
    if proto.dtype == _DT_STRING and not proto.tensor_content:
        dims = [d.size for d in proto.tensor_shape.dim]
        values = proto.string_val
        if all(d >= 0 for d in dims) and len(values) == math.prod(dims):
            array = np.empty(len(values), dtype=object)
            array[:] = list(values)
            return array.reshape(dims)
    return tensor_proto_to_array(proto)


class GrpcServices:
    """``PredictionService`` and ``ModelService`` methods for grpc's generic registration."""

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    @staticmethod
    def _guard(context: Any, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except ServingError as exc:
            error = exc
        except Exception as exc:  # a server must answer, not die
            log.exception("gRPC handler failed")
            error = error_from_exception(exc)
        context.abort(grpc_code(error.code), error.message)

    def predict(self, request: Any) -> Any:
        """One ``PredictRequest`` answered; raises ``ServingError`` for the client."""
        version, label = spec_version_and_label(request.model_spec)
        servable = self.manager.resolve(request.model_spec.name, version, label)
        signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        arrays = {k: _input_array(v) for k, v in request.inputs.items()}
        outputs = servable.run(signature_name, arrays, request.output_filter)
        response = _predict_pb2().PredictResponse()
        spec = response.model_spec
        spec.name = servable.name
        spec.version.value = servable.version
        spec.signature_name = signature_name
        for key, value in outputs.items():
            array_to_tensor_proto(value, response.outputs[key])
        return response

    def Predict(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC method name
        return self._guard(context, lambda: self.predict(request))

    def metadata(self, request: Any) -> Any:
        """A ``GetModelMetadataRequest`` answered."""
        version, label = spec_version_and_label(request.model_spec)
        servable = self.manager.resolve(request.model_spec.name, version, label)
        return metadata_response(servable, list(request.metadata_field))

    def GetModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._guard(context, lambda: self.metadata(request))

    def status(self, request: Any) -> Any:
        """A ``GetModelStatusRequest`` answered (INVALID_ARGUMENT without a model spec)."""
        if not request.HasField("model_spec"):
            raise invalid("Missing ModelSpec")
        version, label = spec_version_and_label(request.model_spec)
        return status_response(self.manager.status(request.model_spec.name, version, label))

    def GetModelStatus(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._guard(context, lambda: self.status(request))

    def reload(self, request: Any) -> Any:
        """A ``ReloadConfigRequest`` applied: the manager takes the whole config."""
        tensorflow()
        from tensorflow_serving.apis import model_management_pb2

        log.info(
            "reload config: %s",
            ", ".join(c.name for c in request.config.model_config_list.config) or "<no models>",
        )
        self.manager.reload(request.config)
        return model_management_pb2.ReloadConfigResponse()

    def HandleReloadConfigRequest(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._guard(context, lambda: self.reload(request))

    # The other PredictionService methods answer UNIMPLEMENTED, as a server without them would.
    def _unimplemented(self, request: Any, context: Any) -> Any:
        import grpc

        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not implemented by the recops model server")

    Classify = Regress = MultiInference = _unimplemented
