"""Client for the model server (ours or a real TF Serving): REST and gRPC.

REST calls use only the standard library, so status checks from the CLI stay cheap;
gRPC calls import ``grpc`` and the ``tensorflow_serving`` protos (and so TensorFlow) when
first used. Every failure is raised as ``ServingError`` carrying the server's own error
text and a canonical status code (``NOT_FOUND``, ``INVALID_ARGUMENT``...).

``ServingClient.from_settings`` talks to a real TF Serving when ``RECOPS_TFSERVING_GRPC`` /
``RECOPS_TFSERVING_REST`` (``host:port``) are set, else to the embedded local server.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from recops_models.tf_env import tensorflow

from recops.errors import ParamError, ServingError

if TYPE_CHECKING:
    import numpy as np
    from tensorflow_serving.config.model_server_config_pb2 import ModelServerConfig

    from recops.config import Settings

__all__ = [
    "RAW_TENSOR_DTYPES",
    "ServingClient",
    "ServingError",
    "array_to_tensor_proto",
    "external_server",
    "split_host_port",
    "tensor_proto_to_ndarray",
]

_CODE_FOR_HTTP = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_GRPC_MAX_MESSAGE_BYTES = 256 * 1024 * 1024


def split_host_port(value: str, *, name: str) -> tuple[str, int]:
    """``"host:port"`` (or ``"[v6]:port"``) -> ``(host, port)``; ``name`` is for the error."""
    host, sep, port = value.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ParamError(f"{name}={value!r}: expected host:port, e.g. tfserving:8500")
    return host, int(port)


def external_server(settings: Settings) -> bool:
    """Whether the settings name a real TF Serving (``RECOPS_TFSERVING_GRPC``/``_REST``)."""
    return bool(settings.tfserving_grpc or settings.tfserving_rest)


_UNSPECIFIED = {"0.0.0.0": "127.0.0.1", "::": "::1"}


class ServingClient:
    """Talks to one server: ``host`` with ``grpc_port`` and ``rest_port``.

    ``rest_host`` is for a deployment whose REST API sits on another host than its gRPC
    API (it defaults to ``host``). Use as a context manager (or call ``close``) to
    release the gRPC channel.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        grpc_port: int = 8500,
        rest_port: int = 8501,
        *,
        timeout_s: float = 30.0,
        rest_host: str | None = None,
    ) -> None:
        host = _UNSPECIFIED.get(host, host)
        self.host = host
        self.rest_host = _UNSPECIFIED.get(rest_host, rest_host) if rest_host else host
        self.grpc_port = grpc_port
        self.rest_port = rest_port
        self.timeout_s = timeout_s
        self._channel: Any = None
        self._stub: Any = None
        self._stub_channel: Any = None

    @classmethod
    def from_settings(cls, settings: Settings, *, timeout_s: float = 30.0) -> ServingClient:
        """A client for the configured server.

        ``RECOPS_TFSERVING_GRPC`` / ``RECOPS_TFSERVING_REST`` (``host:port``) name a real
        TF Serving; when only one is set, the other API is assumed on the same host at TF
        Serving's default port. When neither is set, the embedded server's host and ports.
        """
        if not external_server(settings):
            return cls(
                settings.serving_host, settings.grpc_port, settings.rest_port, timeout_s=timeout_s
            )
        if settings.tfserving_grpc:
            grpc_host, grpc_port = split_host_port(
                settings.tfserving_grpc, name="RECOPS_TFSERVING_GRPC"
            )
        if settings.tfserving_rest:
            rest_host, rest_port = split_host_port(
                settings.tfserving_rest, name="RECOPS_TFSERVING_REST"
            )
        if not settings.tfserving_grpc:
            grpc_host, grpc_port = rest_host, 8500
        if not settings.tfserving_rest:
            rest_host, rest_port = grpc_host, 8501
        return cls(grpc_host, grpc_port, rest_port, timeout_s=timeout_s, rest_host=rest_host)

    @property
    def rest_base(self) -> str:
        host = f"[{self.rest_host}]" if ":" in self.rest_host else self.rest_host
        return f"http://{host}:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.grpc_port}"

    def model_url(self, model: str, *, version: int | None = None, label: str | None = None) -> str:
        """``http://host:port/v1/models/<model>[/versions/<v>|/labels/<l>]``."""
        if version is not None and label is not None:
            raise ParamError("give a version or a label, not both")
        url = f"{self.rest_base}/v1/models/{urllib.parse.quote(model, safe='')}"
        if version is not None:
            url += f"/versions/{int(version)}"
        elif label is not None:
            url += f"/labels/{urllib.parse.quote(label, safe='')}"
        return url

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
            self._stub = self._stub_channel = None

    def __enter__(self) -> ServingClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- REST -------------------------------------------------------------------------
    def _rest(self, method: str, url: str, payload: Any = None) -> dict[str, Any]:
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        request = urllib.request.Request(
            url, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
                body = reply.read()
        except urllib.error.HTTPError as exc:
            with exc:
                raw = exc.read()
            try:
                message = str(json.loads(raw)["error"])
            except (ValueError, KeyError, TypeError):
                message = raw.decode("utf-8", errors="replace") or exc.reason
            code = _CODE_FOR_HTTP.get(exc.code, "INTERNAL" if exc.code >= 500 else "UNKNOWN")
            raise ServingError(code, message, http_status=exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServingError("UNAVAILABLE", f"cannot reach {url}: {reason}") from None
        try:
            result = json.loads(body)
        except ValueError as exc:
            raise ServingError("INTERNAL", f"{url} answered with invalid JSON: {exc}") from None
        if not isinstance(result, dict):
            raise ServingError("INTERNAL", f"{url} answered with a JSON {type(result).__name__}")
        return result

    def predict_rest(
        self,
        model: str,
        instances: Sequence[Any] | None = None,
        *,
        inputs: Any = None,
        version: int | None = None,
        label: str | None = None,
        signature_name: str | None = None,
    ) -> dict[str, Any]:
        """POST ``:predict`` with ``instances`` (row format) or ``inputs`` (columnar).

        Returns the server's JSON: ``{"predictions": ...}`` or ``{"outputs": ...}``.
        """
        if (instances is None) == (inputs is None):
            raise ParamError("pass exactly one of instances (row format) or inputs (columnar)")
        payload: dict[str, Any] = {}
        if signature_name:
            payload["signature_name"] = signature_name
        if instances is not None:
            payload["instances"] = list(instances)
        else:
            payload["inputs"] = inputs
        url = self.model_url(model, version=version, label=label) + ":predict"
        return self._rest("POST", url, payload)

    def metadata(
        self, model: str, *, version: int | None = None, label: str | None = None
    ) -> dict[str, Any]:
        """GET ``.../metadata``: the model spec and its signature defs, as JSON."""
        return self._rest("GET", self.model_url(model, version=version, label=label) + "/metadata")

    def version_status(self, model: str) -> dict[int, dict[str, str]]:
        """Version -> ``{"state", "error_code", "error_message"}``, GET ``/v1/models/<model>``."""
        reply = self._rest("GET", self.model_url(model))
        result: dict[int, dict[str, str]] = {}
        for item in reply.get("model_version_status", []):
            status = item.get("status") or {}
            result[int(item["version"])] = {
                "state": str(item.get("state", "UNKNOWN")),
                "error_code": str(status.get("error_code", "OK")),
                "error_message": str(status.get("error_message", "")),
            }
        return result

    def model_status(self, model: str) -> dict[int, str]:
        """Version -> state (``START``, ``LOADING``, ``AVAILABLE``, ``UNLOADING``, ``END``)."""
        return {version: item["state"] for version, item in self.version_status(model).items()}

    def wait_available(
        self, model: str, version: int, timeout_s: float = 120.0, *, poll_s: float = 0.2
    ) -> None:
        """Poll the status until ``version`` is AVAILABLE.

        Raises ``ServingError`` at once if the version ends with a load error, and
        ``TimeoutError`` at the deadline, naming the last state seen.
        """
        deadline = time.monotonic() + timeout_s
        last = "not listed"
        while True:
            try:
                item = self.version_status(model).get(int(version))
            except ServingError as exc:
                if exc.code != "NOT_FOUND":
                    raise
                item = None
            if item is not None:
                last = item["state"]
                if last == "AVAILABLE":
                    return
                if last == "END":
                    detail = item["error_message"] or "the version was unloaded"
                    code = (
                        item["error_code"] if item["error_code"] != "OK" else "FAILED_PRECONDITION"
                    )
                    raise ServingError(
                        code, f"model {model} version {version} did not load: {detail}"
                    )
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"model {model} version {version} not AVAILABLE after {timeout_s:.0f}s "
                    f"(last state: {last})"
                )
            time.sleep(poll_s)

    # -- gRPC -------------------------------------------------------------------------
    def _grpc_channel(self) -> Any:
        import grpc

        if self._channel is None:
            self._channel = grpc.insecure_channel(
                self.grpc_target,
                options=[
                    ("grpc.max_receive_message_length", _GRPC_MAX_MESSAGE_BYTES),
                    ("grpc.max_send_message_length", _GRPC_MAX_MESSAGE_BYTES),
                ],
            )
        return self._channel

    def _grpc_call(self, method: Any, request: Any, timeout_s: float | None = None) -> Any:
        import grpc

        try:
            return method(request, timeout=timeout_s or self.timeout_s)
        except grpc.RpcError as exc:
            code = exc.code().name if exc.code() is not None else "UNKNOWN"
            raise ServingError(code, exc.details() or code) from None

    def _predict_stub(self) -> Any:
        """The ``PredictionService`` stub on the client's channel, made once."""
        if self._stub is None or self._stub_channel is not self._channel:
            tensorflow()  # the protos below import TensorFlow: select tf_keras first
            from tensorflow_serving.apis import prediction_service_pb2_grpc

            channel = self._grpc_channel()
            self._stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            self._stub_channel = channel
        return self._stub

    def predict_grpc(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        *,
        version: int | None = None,
        label: str | None = None,
        signature_name: str = "serving_default",
        output_filter: Sequence[str] = (),
        timeout_s: float | None = None,
    ) -> dict[str, np.ndarray]:
        """``PredictionService.Predict``: named numpy inputs in, named numpy outputs out.

        The tensors are written and read with ``array_to_tensor_proto`` /
        ``tensor_proto_to_ndarray`` (raw bytes, no TensorFlow op per call), over one
        channel and stub kept for the client's life: this is the recommendation
        service's per-request path.
        """
        from tensorflow_serving.apis import predict_pb2

        stub = self._predict_stub()
        request = predict_pb2.PredictRequest()
        _fill_spec(request.model_spec, model, version, label)
        request.model_spec.signature_name = signature_name
        for name, value in inputs.items():
            array_to_tensor_proto(value, request.inputs[name])
        request.output_filter.extend(output_filter)
        response = self._grpc_call(stub.Predict, request, timeout_s)
        return {name: tensor_proto_to_ndarray(proto) for name, proto in response.outputs.items()}

    def reload_config(self, config: ModelServerConfig, *, timeout_s: float | None = None) -> None:
        """``ModelService.HandleReloadConfigRequest``: replace the server's whole config.

        An OK reply means the config was accepted, not that added versions have loaded;
        follow with ``wait_available``.
        """
        tensorflow()  # the protos below import TensorFlow: select tf_keras first
        from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

        request = model_management_pb2.ReloadConfigRequest()
        request.config.CopyFrom(config)
        stub = model_service_pb2_grpc.ModelServiceStub(self._grpc_channel())
        response = self._grpc_call(stub.HandleReloadConfigRequest, request, timeout_s)
        if response.status.error_code != 0:
            raise ServingError("UNKNOWN", response.status.error_message or "reload failed")

    def model_status_grpc(self, model: str) -> dict[int, str]:
        """``ModelService.GetModelStatus``: version -> state, over gRPC."""
        tensorflow()  # the protos below import TensorFlow: select tf_keras first
        from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model
        stub = model_service_pb2_grpc.ModelServiceStub(self._grpc_channel())
        response = self._grpc_call(stub.GetModelStatus, request)
        names = get_model_status_pb2.ModelVersionStatus.State
        return {int(s.version): names.Name(s.state) for s in response.model_version_status}


def _fill_spec(spec: Any, model: str, version: int | None, label: str | None) -> None:
    if version is not None and label is not None:
        raise ParamError("give a version or a label, not both")
    spec.name = model
    if version is not None:
        spec.version.value = int(version)
    elif label is not None:
        spec.version_label = label


# --------------------------------------------------------------------------- tensors

#: numpy dtype -> TensorFlow's ``DataType`` enum value (``tensorflow/core/framework/
#: types.proto``), for the dtypes whose ``tensor_content`` is the array's raw bytes.
_TF_DTYPE = {
    "float32": 1,  # DT_FLOAT
    "float64": 2,  # DT_DOUBLE
    "int32": 3,  # DT_INT32
    "uint8": 4,  # DT_UINT8
    "int16": 5,  # DT_INT16
    "int8": 6,  # DT_INT8
    "int64": 9,  # DT_INT64
    "bool": 10,  # DT_BOOL
    "float16": 19,  # DT_HALF
    "uint32": 22,  # DT_UINT32
    "uint64": 23,  # DT_UINT64
}
_NUMPY_DTYPE = {code: name for name, code in _TF_DTYPE.items()}
#: The ``DataType`` codes ``tensor_proto_to_ndarray`` reads from raw bytes itself.
RAW_TENSOR_DTYPES = frozenset(_NUMPY_DTYPE)
_DT_STRING = 7


def array_to_tensor_proto(value: Any, proto: Any = None) -> Any:
    """A numpy array (or array-like) as a ``TensorProto``, written into ``proto`` if given.

    Numeric and bool arrays travel as their little-endian bytes in ``tensor_content``,
    strings (``bytes``, ``str`` or an object array of them) in ``string_val``: what
    ``tf.make_tensor_proto`` writes, without building a TensorFlow tensor per call (tens
    of microseconds each, on a path with a few milliseconds to spend). Any other dtype
    goes through ``tf.make_tensor_proto``.
    """
    import numpy as np

    if proto is None:
        tensorflow()
        from tensorflow.core.framework import tensor_pb2

        proto = tensor_pb2.TensorProto()
    array = np.asarray(value)
    code = _TF_DTYPE.get(array.dtype.name)
    if code is None and array.dtype.kind not in "OSU":
        proto.CopyFrom(tensorflow().make_tensor_proto(array))
        return proto
    dims = proto.tensor_shape.dim
    for size in array.shape:
        dims.add().size = int(size)
    if code is None:  # strings
        proto.dtype = _DT_STRING
        proto.string_val.extend(
            v if isinstance(v, bytes) else str(v).encode("utf-8") for v in array.ravel().tolist()
        )
        return proto
    proto.dtype = code
    little = array.dtype.newbyteorder("<")
    proto.tensor_content = np.ascontiguousarray(array, dtype=little).tobytes()
    return proto


def tensor_proto_to_ndarray(proto: Any) -> np.ndarray:
    """A ``TensorProto`` as a numpy array: a view of ``tensor_content`` when it has one.

    What a server writes for a numeric output (``tf.make_tensor_proto`` of an array)
    is read with ``np.frombuffer``; any other encoding (``float_val``, ``string_val``...)
    through ``tf.make_ndarray``. The array may be read-only.

    Raises:
        ValueError: ``tensor_content`` does not hold the shape's number of elements.
    """
    import numpy as np

    name = _NUMPY_DTYPE.get(proto.dtype)
    content = proto.tensor_content
    if name is not None and content:
        shape = [d.size for d in proto.tensor_shape.dim]
        if any(size < 0 for size in shape):  # reshape would read -1 as "infer"
            raise ValueError(f"TensorProto has a negative dimension: {shape}")
        dtype = np.dtype(name).newbyteorder("<")
        return np.frombuffer(content, dtype=dtype).reshape(shape)
    return np.asarray(tensorflow().make_ndarray(proto))
