"""A TF Serving-compatible model server for SavedModels, built on ``tensorflow-serving-api``.

No TF Serving binary can be installed where recops runs, so this module serves the same
API from Python:

* gRPC on ``grpc_port``: ``PredictionService.Predict`` / ``GetModelMetadata`` and
  ``ModelService.GetModelStatus`` / ``HandleReloadConfigRequest``;
* REST on ``rest_port``: ``GET /v1/models/{name}[/versions/{v}|/labels/{l}][/metadata]`` and
  ``POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict``, with errors as
  ``{"error": "..."}`` (400 for bad input, including JSON nested deeper than
  ``MAX_JSON_DEPTH``, which is rejected before it is parsed; 404 for an unknown model,
  version or label; 413 for a body over ``--max-body-bytes``, 8 MiB by default). A GET's
  body is read and ignored. It binds 127.0.0.1 unless told otherwise.

Models come from ``models.config`` (a ``ModelServerConfig`` text proto) and load with
``tf.saved_model.load`` from ``<base_path>/<version>/``. Versions move through TF Serving's
states (START, LOADING, AVAILABLE, UNLOADING, END, with an error status when a load
fails). A reload replaces the whole config; a new version loads while the old one keeps
serving; a label may only point at an AVAILABLE version (else FAILED_PRECONDITION); warmup
records in ``<version>/assets.extra/tf_serving_warmup_requests`` are replayed on load.

``python -m recops.serving.server`` runs it in the foreground. ``start_background``,
``stop_background`` and ``is_running`` manage a detached one for the pipeline and the CLI.

Only the standard library and numpy are imported here at module level; TensorFlow, grpc
and the protos are imported where they are used, so the background helpers stay cheap.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import logging
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recops.errors import ServingError

if TYPE_CHECKING:
    from tensorflow.core.protobuf.meta_graph_pb2 import SignatureDef
    from tensorflow_serving.apis.model_pb2 import ModelSpec
    from tensorflow_serving.config.model_server_config_pb2 import ModelServerConfig

    from recops.config import Settings

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_SIGNATURE",
    "MAX_JSON_DEPTH",
    "answers",
    "import_tensorflow",
    "WARMUP_FILE",
    "ModelManager",
    "ModelServer",
    "ServingError",
    "SignatureIO",
    "TensorMeta",
    "is_running",
    "json_depth",
    "json_to_tensors",
    "main",
    "parse_json_body",
    "read_signature_defs",
    "start_background",
    "stop_background",
    "tensors_to_json",
]

log = logging.getLogger("recops.serving")

DEFAULT_SIGNATURE = "serving_default"
#: Warmup records, relative to a version folder (TF Serving's name and place).
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
#: TF Serving refuses more warmup records than this.
MAX_WARMUP_RECORDS = 1000
#: Deeper JSON is rejected before it is parsed (CVE-2025-0649 crashed TF Serving on it).
MAX_JSON_DEPTH = 100
#: Larger REST bodies get 413 (``RECOPS_SERVING_MAX_BODY_BYTES`` / ``--max-body-bytes``).
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
GRPC_MAX_MESSAGE_BYTES = 256 * 1024 * 1024
#: Largest tensor a request may ask for (what a full-size gRPC message of floats holds).
MAX_TENSOR_ELEMENTS = GRPC_MAX_MESSAGE_BYTES // 4


def import_tensorflow() -> Any:
    """Import TensorFlow the project's way (Keras 2 through tf_keras).

    Call it before importing ``tensorflow_serving.apis``, whose protos import TensorFlow.
    """
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow

    return tensorflow


def _invalid(message: str) -> ServingError:
    return ServingError("INVALID_ARGUMENT", message)


def _error_from_exception(exc: BaseException) -> ServingError:
    """Map an exception raised by TensorFlow (or anything) to a ServingError."""
    if isinstance(exc, ServingError):
        return exc
    try:
        tf = import_tensorflow()

        if isinstance(exc, tf.errors.OpError):
            import grpc

            names = {code.value[0]: code.name for code in grpc.StatusCode}
            return ServingError(names.get(exc.error_code, "UNKNOWN"), exc.message)
    except ImportError:  # pragma: no cover - TensorFlow is a dependency
        pass
    if isinstance(exc, (TypeError, ValueError)):
        return _invalid(f"{type(exc).__name__}: {exc}")
    return ServingError("INTERNAL", f"{type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------------------
# REST JSON <-> tensors: the one place where TF Serving's JSON formats are handled
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorMeta:
    """A signature input or output: TF dtype name (``int64``, ``string``...) and shape.

    ``shape`` is None for unknown rank; a None dimension is unknown size.
    """

    dtype: str
    shape: tuple[int | None, ...] | None = None

    def numpy_dtype(self) -> np.dtype[Any]:
        if self.dtype == "string":
            return np.dtype(object)
        try:
            return np.dtype(self.dtype)
        except TypeError as exc:
            raise ServingError(
                "UNIMPLEMENTED", f"tensors of type {self.dtype} are not supported"
            ) from exc

    def compatible(self, shape: Sequence[int]) -> bool:
        if self.shape is None:
            return True
        return len(shape) == len(self.shape) and all(
            want is None or want == got for want, got in zip(self.shape, shape, strict=True)
        )

    def describe_shape(self) -> str:
        if self.shape is None:
            return "<unknown rank>"
        return "[" + ",".join("?" if d is None else str(d) for d in self.shape) + "]"


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


def json_depth(body: bytes) -> int:
    """Deepest ``[``/``{`` nesting of a JSON text, counted without parsing it.

    String contents are blanked first so brackets inside strings do not count. The scan
    is linear and vectorised, so it is safe to run on any body before ``json.loads``
    (whose recursion is what a deeply nested document attacks).
    """
    stripped = np.frombuffer(_JSON_STRING.sub(b'""', body), dtype=np.uint8)
    opens = (stripped == ord("[")) | (stripped == ord("{"))
    closes = (stripped == ord("]")) | (stripped == ord("}"))
    positions = np.flatnonzero(opens | closes)
    if positions.size == 0:
        return 0
    steps = np.where(opens[positions], 1, -1).astype(np.int64)
    return int(np.cumsum(steps).max())


def parse_json_body(body: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> dict[str, Any]:
    """Parse a request body into a JSON object, rejecting deep nesting before parsing."""
    if not body.strip():
        raise _invalid("JSON Parse error: The document is empty")
    depth = json_depth(body)
    if depth > max_depth:
        raise _invalid(f"JSON Parse error: nesting depth {depth} exceeds the limit of {max_depth}")
    try:
        doc = json.loads(body)
    except RecursionError as exc:  # belt and braces; the depth check should stop it first
        raise _invalid("JSON Parse error: document nested too deeply") from exc
    except UnicodeDecodeError as exc:
        raise _invalid(f"JSON Parse error: body is not UTF-8: {exc}") from exc
    except ValueError as exc:  # json.JSONDecodeError and int-digit limits
        raise _invalid(f"JSON Parse error: {exc}") from exc
    if not isinstance(doc, dict):
        raise _invalid(f"JSON Value: {_snippet(doc)} Is not object")
    return doc


def _snippet(value: Any, limit: int = 120) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_JSON_TYPES = ((bool, "Bool"), (int, "Int"), (float, "Double"), (str, "String"), (list, "Array"))


def _json_type(value: Any) -> str:
    """The JSON type name TF Serving's errors use (bool before int: bool is an int here)."""
    if value is None:
        return "Null"
    return next((name for kind, name in _JSON_TYPES if isinstance(value, kind)), "Object")


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _scalar_converter(meta: TensorMeta) -> Callable[[Any], Any]:
    """A function that checks one JSON leaf against ``meta.dtype`` and converts it."""
    dtype = meta.dtype

    def type_error(value: Any) -> ServingError:
        return _invalid(
            f"JSON Value: {_snippet(value)} Type: {_json_type(value)} "
            f"is not of expected type: {dtype}"
        )

    if dtype == "string":

        def to_bytes(value: Any) -> bytes:
            if isinstance(value, str):
                return value.encode("utf-8")
            if _is_b64(value):
                try:
                    return base64.b64decode(value["b64"], validate=True)
                except ValueError as exc:
                    raise _invalid("Unable to base64 decode") from exc
            raise type_error(value)

        return to_bytes
    if dtype == "bool":

        def to_bool(value: Any) -> bool:
            if not isinstance(value, bool):
                raise type_error(value)
            return value

        return to_bool
    np_dtype = meta.numpy_dtype()
    if np_dtype.kind in "iu":
        info = np.iinfo(np_dtype)

        def to_int(value: Any) -> int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise type_error(value)
            if not info.min <= value <= info.max:
                raise _invalid(f"JSON Value: {_snippet(value)} is out of range for type: {dtype}")
            return value

        return to_int
    if np_dtype.kind == "f":

        def to_float(value: Any) -> float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise type_error(value)
            return float(value)

        return to_float
    raise ServingError(
        "UNIMPLEMENTED", f"Conversion of JSON values to type {dtype} is not supported"
    )


def _json_to_array(value: Any, meta: TensorMeta) -> np.ndarray:
    """One dense tensor from a (nested) JSON list; the shape comes from the first elements."""
    shape: list[int] = []
    probe = value
    while isinstance(probe, list):
        shape.append(len(probe))
        if not probe:
            break
        probe = probe[0]
    convert = _scalar_converter(meta)
    flat: list[Any] = []

    def fill(item: Any, level: int) -> None:
        if isinstance(item, list):
            if level >= len(shape):
                raise _invalid(
                    f"Encountered list at unexpected level: {level} expected < {len(shape)}"
                )
            if len(item) != shape[level]:
                raise _invalid(
                    f"Encountered list at unexpected size: {len(item)} at level: {level} "
                    f"expected size: {shape[level]}"
                )
            for element in item:
                fill(element, level + 1)
            return
        if level != len(shape):
            raise _invalid(
                f"JSON Value: {_snippet(item)} found at incorrect level: {level + 1} "
                f"in the JSON DOM. Expected at level: {len(shape)}"
            )
        if isinstance(item, dict) and not (meta.dtype == "string" and _is_b64(item)):
            raise _invalid(
                f"JSON Value: {_snippet(item)} Type: Object is not of expected type: {meta.dtype}"
            )
        flat.append(convert(item))

    fill(value, 0)
    array = np.empty(len(flat), dtype=meta.numpy_dtype())
    array[:] = flat
    return array.reshape(shape)


def json_to_tensors(
    doc: Mapping[str, Any], inputs: Mapping[str, TensorMeta]
) -> tuple[dict[str, np.ndarray], str]:
    """Turn a predict request body into named input arrays, as TF Serving reads it.

    ``{"instances": [...]}`` is the row format: each instance is an object with one key per
    input (or a bare value when the signature has one input), and instances are stacked
    along a new first dimension. ``{"inputs": ...}`` is the columnar format: an object of
    whole tensors (or one bare tensor for a single input). Returns the arrays and the format
    (``"row"`` or ``"columnar"``), which decides the shape of the response.
    """
    if not inputs:
        raise _invalid("Failed to get input map for signature")
    if "instances" in doc and "inputs" in doc:
        raise _invalid(
            "Not formatted correctly: expecting only one of 'inputs' or 'instances' keys"
        )
    if "instances" in doc:
        return _instances_to_tensors(doc["instances"], inputs), "row"
    if "inputs" in doc:
        return _inputs_to_tensors(doc["inputs"], inputs), "columnar"
    raise _invalid("Missing 'inputs' or 'instances' key")


def _instances_to_tensors(
    instances: Any, inputs: Mapping[str, TensorMeta]
) -> dict[str, np.ndarray]:
    if not isinstance(instances, list):
        raise _invalid("Expecting 'instances' to be an list/array")
    if not instances:
        raise _invalid("No values in 'instances' array")
    named = isinstance(instances[0], dict) and not _is_b64(instances[0])
    if not named and len(inputs) > 1:
        raise _invalid(
            "instances is a plain list, but expecting list of objects as multiple input "
            f"tensors required as per signature: {', '.join(sorted(inputs))}"
        )
    rows: dict[str, list[np.ndarray]] = {name: [] for name in inputs}
    only = next(iter(inputs))
    for index, instance in enumerate(instances):
        is_object = isinstance(instance, dict) and not _is_b64(instance)
        if is_object != named:
            expected = "object" if named else "value/list"
            raise _invalid(f"Expecting {expected} at item {index} of 'instances' list")
        items = instance if named else {only: instance}
        if set(items) != set(inputs):
            raise _invalid(
                f"Failed to process element: {index} of 'instances' list. JSON object: "
                f"{_snippet(instance)} keys must be equal to: {','.join(sorted(inputs))}"
            )
        for name, value in items.items():
            try:
                array = _json_to_array(value, inputs[name])
            except ServingError as exc:
                raise ServingError(
                    exc.code,
                    f"Failed to process element: {index} key: {name} of 'instances' list. "
                    f"Error: {exc.message}",
                ) from exc
            if rows[name] and rows[name][0].shape != array.shape:
                raise _invalid(
                    f"Failed to process element: {index} key: {name} of 'instances' list. "
                    f"Expecting shape {list(rows[name][0].shape)} but got: {list(array.shape)}"
                )
            rows[name].append(array)
    return {name: np.stack(arrays) for name, arrays in rows.items()}


def _inputs_to_tensors(value: Any, inputs: Mapping[str, TensorMeta]) -> dict[str, np.ndarray]:
    if not isinstance(value, dict) or _is_b64(value):
        if len(inputs) > 1:
            raise _invalid(
                "inputs is a plain value/list, but expecting an object as multiple input "
                f"tensors required as per signature: {', '.join(sorted(inputs))}"
            )
        name = next(iter(inputs))
        return {name: _json_to_array(value, inputs[name])}
    arrays = {}
    for name, meta in inputs.items():
        if name not in value:
            raise _invalid(f"Missing named input: {name} in 'inputs' object.")
        arrays[name] = _json_to_array(value[name], meta)
    return arrays


def _to_json_value(array: np.ndarray, name: str) -> Any:
    """An array as nested lists; strings as text (``{"b64": ...}`` for ``*_bytes`` or non-UTF-8)."""
    if array.dtype.kind not in "OSU":
        return array.tolist()
    as_b64 = name.endswith("_bytes")

    def convert(item: Any) -> Any:
        if isinstance(item, list):
            return [convert(x) for x in item]
        if isinstance(item, str):
            item = item.encode("utf-8")
        if not as_b64:
            try:
                return item.decode("utf-8")
            except UnicodeDecodeError:
                pass
        return {"b64": base64.b64encode(item).decode("ascii")}

    return convert(array.tolist())


def tensors_to_json(outputs: Mapping[str, np.ndarray], fmt: str) -> dict[str, Any]:
    """Predict outputs as TF Serving writes them.

    Row format gives ``{"predictions": [...]}`` with one entry per batch row: the bare
    value when there is one output, else an object keyed by output name. Columnar format
    gives ``{"outputs": value}`` for one output, else ``{"outputs": {name: value}}``.
    """
    if not outputs:
        raise _invalid("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    if fmt == "columnar":
        if len(names) == 1:
            return {"outputs": _to_json_value(outputs[names[0]], names[0])}
        return {"outputs": {name: _to_json_value(outputs[name], name) for name in names}}
    batch = None
    for name in names:
        array = outputs[name]
        if array.ndim == 0:
            raise _invalid(f"Tensor name: {name} has no shape information ")
        if batch is not None and array.shape[0] != batch:
            raise _invalid(
                f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} expecting: {batch}"
            )
        batch = array.shape[0]
    columns = {name: _to_json_value(outputs[name], name) for name in names}
    if len(names) == 1:
        return {"predictions": columns[names[0]]}
    return {
        "predictions": [{name: columns[name][row] for name in names} for row in range(batch or 0)]
    }


# --------------------------------------------------------------------------------------
# SavedModel servables
# --------------------------------------------------------------------------------------


def read_signature_defs(version_dir: str | os.PathLike[str]) -> dict[str, SignatureDef]:
    """The ``serve`` MetaGraph's SignatureDefs, read from ``saved_model.pb(txt)``."""
    import_tensorflow()
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    folder = Path(version_dir)
    saved = saved_model_pb2.SavedModel()
    if (folder / "saved_model.pb").is_file():
        saved.ParseFromString((folder / "saved_model.pb").read_bytes())
    elif (folder / "saved_model.pbtxt").is_file():
        text_format.Parse((folder / "saved_model.pbtxt").read_text(encoding="utf-8"), saved)
    else:
        raise ServingError("NOT_FOUND", f"No SavedModel (saved_model.pb) found in {folder}")
    for meta_graph in saved.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise ServingError("NOT_FOUND", f"SavedModel in {folder} has no MetaGraph tagged 'serve'")


def _tensor_meta(info: Any) -> TensorMeta:
    tf = import_tensorflow()

    dtype = tf.dtypes.as_dtype(info.dtype).name if info.dtype else "invalid"
    if info.tensor_shape.unknown_rank:
        return TensorMeta(dtype, None)
    return TensorMeta(dtype, tuple(d.size if d.size >= 0 else None for d in info.tensor_shape.dim))


@dataclass(frozen=True)
class SignatureIO:
    """A signature's named inputs and outputs, as TensorMeta."""

    inputs: dict[str, TensorMeta]
    outputs: dict[str, TensorMeta]

    @classmethod
    def from_signature_def(cls, signature: SignatureDef) -> SignatureIO:
        return cls(
            inputs={k: _tensor_meta(v) for k, v in signature.inputs.items()},
            outputs={k: _tensor_meta(v) for k, v in signature.outputs.items()},
        )


def _array_dtype_name(array: np.ndarray) -> str:
    return "string" if array.dtype.kind in "OSU" else array.dtype.name


class Servable:
    """One loaded version: the TF object, its SignatureDefs, and ``run``.

    Requests hold a reference to the Servable they resolved, so an unload (the manager
    dropping its reference) never breaks a request already in flight.
    """

    def __init__(self, name: str, version: int, path: Path) -> None:
        tf = import_tensorflow()

        self.name = name
        self.version = version
        self.path = path
        self.signature_defs = read_signature_defs(path)
        self._model = tf.saved_model.load(str(path), tags=["serve"])
        self._functions = dict(self._model.signatures)
        self.signatures = {
            key: SignatureIO.from_signature_def(sig)
            for key, sig in self.signature_defs.items()
            if key in self._functions
        }

    def signature(self, name: str) -> SignatureIO:
        key = name or DEFAULT_SIGNATURE
        try:
            return self.signatures[key]
        except KeyError:
            raise _invalid(f'Serving signature name: "{key}" not found in signature def') from None

    def run(
        self,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
    ) -> dict[str, np.ndarray]:
        """Run one signature; inputs are checked against the SignatureDef first."""
        tf = import_tensorflow()

        signature = self.signature(signature_name)
        sent, wanted = set(inputs), set(signature.inputs)
        if sent != wanted:
            raise _invalid(
                f"input size does not match signature: {len(sent)}!={len(wanted)} "
                f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(wanted))}}}). "
                f"Sent extra: {{{','.join(sorted(sent - wanted))}}}. "
                f"Missing but required: {{{','.join(sorted(wanted - sent))}}}."
            )
        unknown = [name for name in output_filter if name not in signature.outputs]
        if unknown:
            raise _invalid(f"output tensor alias not found in signature: {', '.join(unknown)}")
        tensors = {}
        for name, array in inputs.items():
            meta = signature.inputs[name]
            if _array_dtype_name(array) != meta.dtype:
                raise _invalid(
                    f"Expects arg[{name}] to be {meta.dtype} but {_array_dtype_name(array)} is provided"
                )
            if not meta.compatible(array.shape):
                raise _invalid(
                    f"Input {name} has shape {list(array.shape)}, but the signature expects "
                    f"{meta.describe_shape()}"
                )
            tensors[name] = tf.convert_to_tensor(array, dtype=tf.as_dtype(meta.dtype))
        try:
            result = self._functions[signature_name or DEFAULT_SIGNATURE](**tensors)
        except Exception as exc:
            raise _error_from_exception(exc) from exc
        keep = set(output_filter) or set(result)
        return {name: value.numpy() for name, value in result.items() if name in keep}

    def warmup(self) -> int:
        """Replay ``assets.extra/tf_serving_warmup_requests``; returns the record count."""
        path = self.path / WARMUP_FILE
        if not path.is_file():
            return 0
        tf = import_tensorflow()
        from tensorflow_serving.apis import prediction_log_pb2

        count = 0
        for record in tf.data.TFRecordDataset(str(path)):
            count += 1
            if count > MAX_WARMUP_RECORDS:
                raise _invalid(
                    f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS})"
                )
            entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            kind = entry.WhichOneof("log_type")
            if kind != "predict_log":
                raise ServingError("UNIMPLEMENTED", f"Unsupported log_type for warmup: {kind}")
            request = entry.predict_log.request
            arrays = {k: _tensor_proto_to_array(v) for k, v in request.inputs.items()}
            self.run(request.model_spec.signature_name, arrays, list(request.output_filter))
        return count


def load_servable(name: str, version: int, path: Path) -> Servable:
    """Load a SavedModel version and replay its warmup records (the default loader)."""
    servable = Servable(name, version, path)
    records = servable.warmup()
    if records:
        log.info("model %s version %d: replayed %d warmup records", name, version, records)
    return servable


def _tensor_proto_to_array(proto: Any) -> np.ndarray:
    tf = import_tensorflow()

    # A TensorProto may claim a huge shape and carry one value to broadcast; refuse before
    # numpy tries to allocate it.
    dims = [d.size for d in proto.tensor_shape.dim]
    if any(d < 0 for d in dims):
        raise _invalid(f"TensorProto has a negative dimension: {dims}")
    if math.prod(dims) > MAX_TENSOR_ELEMENTS:
        raise _invalid(f"TensorProto of shape {dims} exceeds {MAX_TENSOR_ELEMENTS} elements")
    try:
        return np.asarray(tf.make_ndarray(proto))
    except Exception as exc:
        raise _invalid(f"Malformed TensorProto: {type(exc).__name__}: {exc}") from exc


# --------------------------------------------------------------------------------------
# Model manager: config, version states, labels
# --------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Version:
    version: int
    path: Path
    state: str = "START"
    error_code: str = "OK"
    error_message: str = ""
    servable: Servable | None = None
    #: Still in the config. An unwanted AVAILABLE version keeps serving until unloaded.
    wanted: bool = True


@dataclass(eq=False)
class _Model:
    name: str
    base_path: str
    versions: dict[int, _Version] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    configured: bool = True


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: str
    error_code: str = "OK"
    error_message: str = ""


@dataclass(frozen=True)
class _Wanted:
    name: str
    base_path: str
    versions: frozenset[int]
    labels: dict[str, int]


Loader = Callable[[str, int, Path], Servable]


class ModelManager:
    """Which versions of which models are wanted, loaded and labelled. Thread-safe.

    A reload validates the whole config, checks labels against the versions AVAILABLE now,
    then starts loads and unloads in the background. An unwanted version keeps serving until
    a wanted one of its model is AVAILABLE or nothing wanted is still loading (TF Serving's
    availability-preserving policy). A failed load is not retried while its version stays
    in the config.
    """

    def __init__(self, loader: Loader = load_servable) -> None:
        self._loader = loader
        self._cond = threading.Condition(threading.RLock())
        self._reload_lock = threading.Lock()
        self._models: dict[str, _Model] = {}

    # -- reload ---------------------------------------------------------------------
    def reload(self, config: ModelServerConfig) -> None:
        """Replace the config (TF Serving ``ReloadConfig``); raises ServingError on refusal.

        Returns once versions of models new to the config have finished loading, and
        raises if any of them failed; new versions of known models load in the background
        (poll the status).
        """
        with self._reload_lock:
            wanted = self._validate(config)
            with self._cond:
                self._check_labels(wanted)
                new_models = [w.name for w in wanted if not self._is_configured(w.name)]
                self._apply(wanted)
            self._wait_for_models(new_models)

    def _is_configured(self, name: str) -> bool:
        model = self._models.get(name)
        return model is not None and model.configured

    def _validate(self, config: ModelServerConfig) -> list[_Wanted]:
        if config.WhichOneof("config") != "model_config_list":
            raise _invalid(
                "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                "Only ModelConfigList is currently supported"
            )
        result: list[_Wanted] = []
        seen: set[str] = set()
        for entry in config.model_config_list.config:
            if not entry.name:
                raise _invalid("A model in model_config_list has no name")
            if entry.name in seen:
                raise _invalid(f"Illegal to list model {entry.name} multiple times in config list")
            seen.add(entry.name)
            if entry.model_platform != "tensorflow":
                raise _invalid(
                    f"Model {entry.name} requests unsupported platform "
                    f"{entry.model_platform or '<unset>'}; only 'tensorflow' is served"
                )
            if not entry.base_path:
                raise _invalid(f"Model {entry.name} has no base_path")
            for label, version in entry.version_labels.items():
                if not label:
                    raise _invalid(f"Model {entry.name} has an empty version label")
                if version < 0:
                    raise _invalid(f"Model {entry.name}: label {label} points at version {version}")
            result.append(
                _Wanted(
                    name=entry.name,
                    base_path=entry.base_path,
                    versions=_wanted_versions(entry),
                    labels=dict(entry.version_labels),
                )
            )
        return result

    def _check_labels(self, wanted: list[_Wanted]) -> None:
        for entry in wanted:
            model = self._models.get(entry.name)
            for version in sorted(set(entry.labels.values())):
                current = model.versions.get(version) if model and model.configured else None
                if current is None or current.state != "AVAILABLE" or version not in entry.versions:
                    raise ServingError(
                        "FAILED_PRECONDITION",
                        f"Request to assign label to version {version} of model {entry.name}, "
                        "which is not currently available for inference",
                    )

    def _apply(self, wanted: list[_Wanted]) -> None:
        names = {w.name for w in wanted}
        for gone in self._models.values():
            if gone.configured and gone.name not in names:
                log.info("model %s left the config: unloading", gone.name)
                gone.configured = False
                gone.labels = {}
                for entry in gone.versions.values():
                    entry.wanted = False
                self._reconcile(gone)
        for w in wanted:
            model = self._models.setdefault(w.name, _Model(name=w.name, base_path=w.base_path))
            rehomed = model.base_path != w.base_path
            if rehomed:  # a new home: every version is new
                for entry in model.versions.values():
                    entry.wanted = False
                model.base_path = w.base_path
            model.configured = True
            model.labels = dict(w.labels)
            for version in sorted(w.versions):
                current = model.versions.get(version)
                if (
                    current is not None
                    and not rehomed
                    and (current.wanted or current.state in ("START", "LOADING", "AVAILABLE"))
                ):
                    # Loading, loaded (maybe still serving after being dropped), or failed
                    # while wanted, which TF Serving does not retry.
                    current.wanted = True
                    continue
                entry = _Version(version=version, path=Path(w.base_path) / str(version))
                model.versions[version] = entry
                threading.Thread(
                    target=self._load,
                    args=(model, entry),
                    name=f"load-{w.name}-{version}",
                    daemon=True,
                ).start()
            for version, entry in model.versions.items():
                if version not in w.versions and entry.wanted:
                    entry.wanted = False
            self._reconcile(model)
        self._cond.notify_all()

    def _load(self, model: _Model, entry: _Version) -> None:
        with self._cond:
            if not entry.wanted:
                entry.state = "END"
                self._cond.notify_all()
                return
            entry.state = "LOADING"
        log.info("loading model %s version %d from %s", model.name, entry.version, entry.path)
        servable: Servable | None = None
        error: ServingError | None = None
        try:
            if not entry.path.is_dir():
                raise ServingError("NOT_FOUND", f"Version folder {entry.path} does not exist")
            servable = self._loader(model.name, entry.version, entry.path)
        except Exception as exc:
            error = _error_from_exception(exc)
            log.error("model %s version %d failed to load: %s", model.name, entry.version, error)
        with self._cond:
            if error is not None:
                entry.state, entry.error_code, entry.error_message = (
                    "END",
                    error.code,
                    error.message,
                )
            elif not entry.wanted:
                entry.state = "END"  # dropped from the config while it loaded
            else:
                entry.servable, entry.state = servable, "AVAILABLE"
                log.info("model %s version %d is AVAILABLE", model.name, entry.version)
            self._reconcile(model)
            self._cond.notify_all()

    def _reconcile(self, model: _Model) -> None:
        """Unload unwanted versions once that keeps the model available (caller holds the lock)."""
        wanted = [v for v in model.versions.values() if v.wanted]
        can_unload = (
            not model.configured
            or any(v.state == "AVAILABLE" for v in wanted)
            or not any(v.state in ("START", "LOADING") for v in wanted)
        )
        if not can_unload:
            return
        for entry in model.versions.values():
            if not entry.wanted and entry.state == "AVAILABLE":
                # Dropping the reference is the whole unload (so UNLOADING is never seen):
                # requests in flight hold their own reference and finish on this version.
                entry.servable = None
                entry.state = "END"
                log.info("model %s version %d unloaded", model.name, entry.version)

    def _wait_for_models(self, names: list[str]) -> None:
        if not names:
            return
        with self._cond:
            self._cond.wait_for(
                lambda: all(
                    v.state not in ("START", "LOADING")
                    for name in names
                    for v in self._models[name].versions.values()
                    if v.wanted
                )
            )
            failed = []
            for name in names:
                entries = [v for v in self._models[name].versions.values() if v.wanted]
                if not entries:
                    failed.append(f"{name}: no versions found under {self._models[name].base_path}")
                failed.extend(
                    f"{name} version {v.version}: {v.error_code}: {v.error_message}"
                    for v in entries
                    if v.state != "AVAILABLE"
                )
        if failed:
            raise ServingError(
                "UNKNOWN", "Some models did not become available: {" + "; ".join(failed) + "}"
            )

    # -- lookups ----------------------------------------------------------------------
    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable a request addresses: a version, a label, or the latest AVAILABLE."""
        if not name:
            raise _invalid("ModelSpec has no name specified.")
        if version is not None and label is not None:
            raise _invalid(
                f"Both model version ({version}) and model version label ({label}) cannot be supplied."
            )
        with self._cond:
            model = self._models.get(name)
            if model is None or not model.configured:
                request = (
                    f"Specific({name}, {version})" if version is not None else f"Latest({name})"
                )
                raise ServingError("NOT_FOUND", f"Servable not found for request: {request}")
            if label is not None:
                version = self._label_version(model, label)
            if version is not None:
                entry = model.versions.get(version)
                if entry is None or entry.servable is None:
                    raise ServingError(
                        "NOT_FOUND", f"Servable not found for request: Specific({name}, {version})"
                    )
                return entry.servable
            available = [v for v in model.versions.values() if v.servable is not None]
            if not available:
                raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({name})")
            servable = max(available, key=lambda v: v.version).servable
            assert servable is not None
            return servable

    @staticmethod
    def _label_version(model: _Model, label: str) -> int:
        try:
            return model.labels[label]
        except KeyError:
            raise ServingError(
                "NOT_FOUND", f"Unrecognized servable version label: {label} (model {model.name})"
            ) from None

    def status(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> list[VersionStatus]:
        """States of a model's versions (TF Serving ``GetModelStatus``)."""
        if not name:
            raise _invalid("ModelSpec has no name specified.")
        with self._cond:
            model = self._models.get(name)
            if model is None or not model.versions:
                raise ServingError("NOT_FOUND", f"Could not find any versions of model {name}")
            if label is not None:
                version = self._label_version(model, label)
            entries = sorted(model.versions.values(), key=lambda v: v.version)
            if version is not None:
                entries = [v for v in entries if v.version == version]
                if not entries:
                    raise ServingError(
                        "NOT_FOUND", f"Could not find version {version} of model {name}"
                    )
            return [
                VersionStatus(v.version, v.state, v.error_code, v.error_message) for v in entries
            ]


def _wanted_versions(entry: Any) -> frozenset[int]:
    """Versions a ModelConfig asks for: ``specific`` as listed, else the newest on disk."""
    policy = entry.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "specific":
        return frozenset(int(v) for v in policy.specific.versions)
    on_disk = sorted(_versions_on_disk(Path(entry.base_path)))
    if choice == "all":
        return frozenset(on_disk)
    count = policy.latest.num_versions if choice == "latest" and policy.latest.num_versions else 1
    return frozenset(on_disk[-count:])


def _versions_on_disk(base: Path) -> list[int]:
    try:
        return [int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()]
    except OSError:
        return []


# --------------------------------------------------------------------------------------
# Protocol adapters (protos <-> manager), shared by gRPC and REST
# --------------------------------------------------------------------------------------


def _spec_version_and_label(spec: ModelSpec) -> tuple[int | None, str | None]:
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return int(spec.version.value), None
    if choice == "version_label":
        return None, str(spec.version_label)
    return None, None


def _grpc_code(name: str) -> Any:
    import grpc

    return grpc.StatusCode.__members__.get(name, grpc.StatusCode.UNKNOWN)


def _status_response(statuses: list[VersionStatus]) -> Any:
    import_tensorflow()
    from tensorflow_serving.apis import get_model_status_pb2

    response = get_model_status_pb2.GetModelStatusResponse()
    for status in statuses:
        item = response.model_version_status.add()
        item.version = status.version
        item.state = get_model_status_pb2.ModelVersionStatus.State.Value(status.state)
        item.status.error_code = _grpc_code(status.error_code).value[0]
        item.status.error_message = status.error_message
    return response


def _metadata_response(servable: Servable, fields: Sequence[str]) -> Any:
    import_tensorflow()
    from tensorflow_serving.apis import get_model_metadata_pb2

    if not fields:
        raise _invalid("GetModelMetadataRequest must specify at least one metadata_field")
    for name in fields:
        if name != "signature_def":
            raise _invalid(f"Metadata field {name} is not supported")
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, value in servable.signature_defs.items():
        signature_map.signature_def[key].CopyFrom(value)
    response.metadata["signature_def"].Pack(signature_map)
    return response


class _GrpcServices:
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
            error = _error_from_exception(exc)
        context.abort(_grpc_code(error.code), error.message)

    def Predict(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC method name
        def call() -> Any:
            tf = import_tensorflow()
            from tensorflow_serving.apis import predict_pb2

            version, label = _spec_version_and_label(request.model_spec)
            servable = self.manager.resolve(request.model_spec.name, version, label)
            signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
            arrays = {k: _tensor_proto_to_array(v) for k, v in request.inputs.items()}
            outputs = servable.run(signature_name, arrays, list(request.output_filter))
            response = predict_pb2.PredictResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            response.model_spec.signature_name = signature_name
            for key, value in outputs.items():
                response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
            return response

        return self._guard(context, call)

    def GetModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        def call() -> Any:
            version, label = _spec_version_and_label(request.model_spec)
            servable = self.manager.resolve(request.model_spec.name, version, label)
            return _metadata_response(servable, list(request.metadata_field))

        return self._guard(context, call)

    def GetModelStatus(self, request: Any, context: Any) -> Any:  # noqa: N802
        def call() -> Any:
            if not request.HasField("model_spec"):
                raise _invalid("Missing ModelSpec")
            version, label = _spec_version_and_label(request.model_spec)
            return _status_response(self.manager.status(request.model_spec.name, version, label))

        return self._guard(context, call)

    def HandleReloadConfigRequest(self, request: Any, context: Any) -> Any:  # noqa: N802
        def call() -> Any:
            import_tensorflow()
            from tensorflow_serving.apis import model_management_pb2

            log.info(
                "reload config: %s",
                ", ".join(c.name for c in request.config.model_config_list.config) or "<no models>",
            )
            self.manager.reload(request.config)
            return model_management_pb2.ReloadConfigResponse()

        return self._guard(context, call)

    # The other PredictionService methods answer UNIMPLEMENTED, as a server without them would.
    def _unimplemented(self, request: Any, context: Any) -> Any:
        import grpc

        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not implemented by the recops model server")

    Classify = Regress = MultiInference = _unimplemented


# --------------------------------------------------------------------------------------
# REST
# --------------------------------------------------------------------------------------

_PREDICT_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?:(classify|regress|predict)",
    re.IGNORECASE,
)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:/versions/(\d+)|/labels/([^/:]+))?(?:/(metadata))?",
    re.IGNORECASE,
)


def _malformed(method: str, path: str) -> ServingError:
    """TF Serving answers 400 for a malformed ``/v1/`` path and 404 for any other path."""
    code = "INVALID_ARGUMENT" if path.lower().startswith("/v1/") else "NOT_FOUND"
    return ServingError(code, f"Malformed request: {method} {path}")


def _proto_json(message: Any) -> dict[str, Any]:
    from google.protobuf import json_format

    return dict(
        json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
    )


class _RestServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], manager: ModelManager, max_body_bytes: int
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.manager = manager
        self.max_body_bytes = max_body_bytes
        super().__init__(address, _RestHandler)


class _RestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "recops-model-server"
    timeout = 120  # seconds a client may stall mid-request
    # Headers and body go out in two writes; with Nagle on, the body waits for the
    # client's delayed ACK (~40 ms on Linux) on every keep-alive request.
    disable_nagle_algorithm = True
    server: _RestServer

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self._respond(self._handle_get)

    def do_POST(self) -> None:  # noqa: N802
        self._respond(self._handle_post)

    def do_PUT(self) -> None:  # noqa: N802
        self._respond(self._handle_other)

    do_DELETE = do_PATCH = do_PUT  # noqa: N815

    def _handle_other(self) -> tuple[int, dict[str, Any]]:
        self._read_body()  # drained, so the connection stays usable
        raise ServingError("UNIMPLEMENTED", f"Method {self.command} is not served; use GET or POST")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("rest %s - %s", self.address_string(), format % args)

    def _respond(self, handler: Callable[[], tuple[int, dict[str, Any]]]) -> None:
        try:
            status, payload = handler()
        except ServingError as exc:
            status, payload = exc.http_status, {"error": exc.message}
        except Exception as exc:  # a server must answer, not die
            log.exception("REST handler failed")
            error = _error_from_exception(exc)
            status, payload = error.http_status, {"error": error.message}
        try:
            body = json.dumps(payload).encode("utf-8")
        except (TypeError, ValueError) as exc:
            status, body = 500, json.dumps({"error": f"cannot encode response: {exc}"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _path(self) -> str:
        return urllib.parse.urlsplit(self.path).path

    def _handle_get(self) -> tuple[int, dict[str, Any]]:
        # A GET may carry a body; it is read and ignored, else its bytes would be parsed as
        # the next request on this keep-alive connection.
        self._read_body()
        match = _STATUS_PATH.fullmatch(self._path())
        if match is None:
            raise _malformed("GET", self._path())
        name, version, label, subresource = match.groups()
        if not name:
            raise _invalid("Missing model name in request.")
        name = urllib.parse.unquote(name)
        label = urllib.parse.unquote(label) if label else None
        number = int(version) if version else None
        manager = self.server.manager
        if subresource:
            servable = manager.resolve(name, number, label)
            return 200, _proto_json(_metadata_response(servable, ["signature_def"]))
        return 200, _proto_json(_status_response(manager.status(name, number, label)))

    def _handle_post(self) -> tuple[int, dict[str, Any]]:
        body = self._read_body()
        match = _PREDICT_PATH.fullmatch(self._path())
        if match is None:
            raise _malformed("POST", self._path())
        name, version, label, method = match.groups()
        if method.lower() != "predict":
            raise ServingError("UNIMPLEMENTED", f"'{method}' is not served; use ':predict'")
        doc = parse_json_body(body)
        signature_name = doc.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise _invalid("'signature_name' key must be a string value.")
        servable = self.server.manager.resolve(
            urllib.parse.unquote(name),
            int(version) if version else None,
            urllib.parse.unquote(label) if label else None,
        )
        signature = servable.signature(signature_name)
        arrays, fmt = json_to_tensors(doc, signature.inputs)
        outputs = servable.run(signature_name, arrays)
        return 200, tensors_to_json(outputs, fmt)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise ServingError(
                "INVALID_ARGUMENT", "chunked request bodies are not supported; send Content-Length"
            )
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            self.close_connection = True
            raise _invalid("Content-Length is not an integer") from None
        if length < 0:
            self.close_connection = True
            raise _invalid("Content-Length is negative")
        limit = self.server.max_body_bytes
        if length > limit:
            # Drain what the client is sending (up to a bound) so it can read the answer.
            self.close_connection = True
            remaining = min(length, 4 * limit)
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                remaining -= len(chunk)
            raise ServingError(
                "INVALID_ARGUMENT",
                f"Request body of {length} bytes exceeds the limit of {limit} bytes",
                http_status=413,
            )
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            raise _invalid(f"Request body ended after {len(body)} of {length} bytes")
        return body


# --------------------------------------------------------------------------------------
# The server process
# --------------------------------------------------------------------------------------


class ModelServer:
    """gRPC and REST front ends over one ModelManager."""

    def __init__(
        self,
        *,
        host: str,
        grpc_port: int,
        rest_port: int,
        models_config: Path | None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        manager: ModelManager | None = None,
    ) -> None:
        self.host = host
        self.models_config = models_config
        self.manager = manager or ModelManager()
        self._wanted_ports = (grpc_port, rest_port)
        self._max_body_bytes = max_body_bytes
        self._grpc: Any = None
        self._rest: _RestServer | None = None
        self._rest_thread: threading.Thread | None = None
        self.grpc_port = grpc_port
        self.rest_port = rest_port

    def start(self) -> None:
        """Load the configured models (a failed model is logged, not fatal), then listen."""
        from concurrent import futures

        import grpc

        from recops.serving.models_config import empty_config, read_config

        import_tensorflow()
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        config = read_config(self.models_config) if self.models_config else empty_config()
        # Labels may only point at AVAILABLE versions, so start-up is two reloads: the
        # versions first, then the labels (what TF Serving needs a flag for).
        unlabelled = type(config)()
        unlabelled.CopyFrom(config)
        for entry in unlabelled.model_config_list.config:
            entry.version_labels.clear()
        for step in (unlabelled, config):
            try:
                self.manager.reload(step)
            except ServingError as exc:
                log.error("initial config %s: %s", self.models_config, exc)

        services = _GrpcServices(self.manager)
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="grpc"),
            options=[
                ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", GRPC_MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),  # a second server on the same port must fail
            ],
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(services, self._grpc)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(services, self._grpc)
        self.grpc_port = self._grpc.add_insecure_port(
            f"{_grpc_host(self.host)}:{self._wanted_ports[0]}"
        )
        if not self.grpc_port:
            raise OSError(f"cannot bind gRPC port {self.host}:{self._wanted_ports[0]}")
        self._rest = _RestServer(
            (self.host, self._wanted_ports[1]), self.manager, self._max_body_bytes
        )
        self.rest_port = int(self._rest.server_address[1])
        self._grpc.start()
        self._rest_thread = threading.Thread(
            target=self._rest.serve_forever, name="rest", kwargs={"poll_interval": 0.2}, daemon=True
        )
        self._rest_thread.start()
        log.info(
            "serving gRPC on %s:%d and REST on %s:%d",
            self.host,
            self.grpc_port,
            self.host,
            self.rest_port,
        )

    def stop(self, grace_s: float = 2.0) -> None:
        if self._rest is not None:
            self._rest.shutdown()
            self._rest.server_close()
            self._rest = None
        if self._grpc is not None:
            self._grpc.stop(grace_s).wait()
            self._grpc = None


def _grpc_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m recops.serving.server``: run the server in the foreground until signalled."""
    from recops.config import Settings

    settings = Settings.from_env()
    parser = argparse.ArgumentParser(
        prog="python -m recops.serving.server",
        description="TF Serving-compatible model server (gRPC + REST) for SavedModels.",
    )
    parser.add_argument("--host", default=settings.serving_host, help="address to bind")
    parser.add_argument("--grpc-port", type=int, default=settings.grpc_port, help="gRPC port")
    parser.add_argument("--rest-port", type=int, default=settings.rest_port, help="REST port")
    parser.add_argument(
        "--models-config",
        type=Path,
        default=settings.models_config_path,
        help="ModelServerConfig text file loaded at start-up (missing: serve nothing)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=int(os.environ.get("RECOPS_SERVING_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)),
        help="largest REST request body accepted (bytes)",
    )
    parser.add_argument(
        "--pidfile",
        type=Path,
        default=_pid_file(settings),
        help="where to record this process id while it serves (found by start/stop_background)",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )

    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: shutting down", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    server = ModelServer(
        host=args.host,
        grpc_port=args.grpc_port,
        rest_port=args.rest_port,
        models_config=args.models_config,
        max_body_bytes=args.max_body_bytes,
    )
    try:
        server.start()
    except Exception:
        log.exception("model server failed to start")
        server.stop(0)
        return 1
    # Recorded here too (not only by start_background), so a server run in the foreground
    # is found and reused by the pipeline instead of clashing with it on the ports.
    _write_pid(args.pidfile, os.getpid())
    try:
        while not stop.wait(0.5):
            pass
        server.stop()
    finally:
        with contextlib.suppress(OSError, ValueError):
            if int(args.pidfile.read_text()) == os.getpid():
                args.pidfile.unlink()
    log.info("model server stopped")
    return 0


# --------------------------------------------------------------------------------------
# Background helpers (stdlib + grpc only: no TensorFlow import)
# --------------------------------------------------------------------------------------

_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
_HEALTH_MODEL = "__recops_health_check__"


def _pid_file(settings: Settings) -> Path:
    return settings.serving_dir / "server.pid"


def _write_pid(path: Path, pid: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{pid}.tmp")
    tmp.write_text(f"{pid}\n")
    os.replace(tmp, path)


def _log_file(settings: Settings) -> Path:
    return settings.serving_dir / "server.log"


def _client_host(host: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def _read_pid(settings: Settings) -> int | None:
    try:
        return int(_pid_file(settings).read_text().strip())
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie still answers kill(0)
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


def _is_model_server(pid: int) -> bool:
    """Whether ``pid`` runs recops (``python -m recops.serving.server`` or ``recops serve``).

    Guards against a recycled pid in a stale pidfile.
    """
    try:
        return b"recops" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the pidfile


def _rest_answers(host: str, port: int, timeout_s: float = 2.0) -> bool:
    url = f"http://{_url_host(_client_host(host))}:{port}/v1/models/{_HEALTH_MODEL}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            reply.read()
            return True
    except urllib.error.HTTPError as exc:
        with exc:
            try:
                return "error" in json.loads(exc.read() or b"{}")
            except ValueError:
                return False
    except (OSError, ValueError):
        return False


def _grpc_answers(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """A GetModelStatus call (raw bytes, so no protos/TensorFlow) gets an application answer."""
    import grpc

    with grpc.insecure_channel(f"{_grpc_host(_client_host(host))}:{port}") as channel:
        call = channel.unary_unary("/tensorflow.serving.ModelService/GetModelStatus")
        try:
            call(b"", timeout=timeout_s)
        except grpc.RpcError as exc:
            return exc.code() not in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            )
        return True


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _healthy(settings: Settings) -> bool:
    return _rest_answers(settings.serving_host, settings.rest_port) and _grpc_answers(
        settings.serving_host, settings.grpc_port
    )


def _log_tail(settings: Settings, lines: int = 40) -> str:
    try:
        text = _log_file(settings).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "<no log>"
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def answers(settings: Settings) -> bool:
    """Whether a TF Serving API (ours or any) answers REST and gRPC on the configured ports."""
    return _healthy(settings)


def is_running(settings: Settings) -> bool:
    """Whether the server recorded in the pidfile is alive and answering REST and gRPC."""
    pid = _read_pid(settings)
    return pid is not None and _pid_alive(pid) and _is_model_server(pid) and _healthy(settings)


def start_background(settings: Settings, *, timeout_s: float = 180.0) -> int:
    """Start ``python -m recops.serving.server`` detached; return its pid once it answers.

    The pidfile and log live in ``settings.serving_dir``. If the recorded server is alive
    it is reused (waiting for it if it is still starting). Raises ``RuntimeError`` with
    the log tail if the process dies or does not answer within ``timeout_s``.
    """
    settings.serving_dir.mkdir(parents=True, exist_ok=True)
    with locked(settings.serving_dir / "server.lock"):
        pid = _read_pid(settings)
        if pid is not None and _pid_alive(pid) and _is_model_server(pid):
            _wait_healthy(settings, pid, timeout_s)
            return pid
        _pid_file(settings).unlink(missing_ok=True)
        if _rest_answers(settings.serving_host, settings.rest_port, 1.0):
            raise RuntimeError(
                f"a server with no pidfile in {settings.serving_dir} already answers on "
                f"{settings.serving_host}:{settings.rest_port}; stop it or set RECOPS_REST_PORT"
            )
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
        command = [
            sys.executable,
            "-m",
            "recops.serving.server",
            "--host",
            settings.serving_host,
            "--grpc-port",
            str(settings.grpc_port),
            "--rest-port",
            str(settings.rest_port),
            "--models-config",
            str(settings.models_config_path),
            "--pidfile",
            str(_pid_file(settings)),
        ]
        with open(_log_file(settings), "ab") as log_handle:
            log_handle.write(
                f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(command)}\n".encode()
            )
            log_handle.flush()
            child = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_handle,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(settings.serving_dir),
                start_new_session=True,
                close_fds=True,
            )
        _CHILDREN[child.pid] = child
        _write_pid(_pid_file(settings), child.pid)
        try:
            _wait_healthy(settings, child.pid, timeout_s)
        except RuntimeError:
            _terminate(child.pid, 5.0)
            _pid_file(settings).unlink(missing_ok=True)
            raise
        log.info("model server %d answers on %s", child.pid, settings.serving_host)
        return child.pid


def _wait_healthy(settings: Settings, pid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if not _pid_alive(pid):
            child = _CHILDREN.get(pid)
            code = child.returncode if child is not None else "?"
            raise RuntimeError(
                f"model server {pid} exited (code {code}) before answering; log "
                f"{_log_file(settings)}:\n{_log_tail(settings)}"
            )
        if _healthy(settings):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"model server {pid} did not answer on REST {settings.rest_port} and gRPC "
                f"{settings.grpc_port} within {timeout_s:.0f}s; log {_log_file(settings)}:\n"
                f"{_log_tail(settings)}"
            )
        time.sleep(0.25)


def _terminate(pid: int, timeout_s: float) -> None:
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not _pid_alive(pid):
            break
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=1.0)


def stop_background(settings: Settings, *, timeout_s: float = 15.0) -> bool:
    """Stop the server in the pidfile (SIGTERM, then SIGKILL); False if none was running."""
    with locked(settings.serving_dir / "server.lock"):
        pid = _read_pid(settings)
        running = pid is not None and _pid_alive(pid) and _is_model_server(pid)
        if running and pid is not None:
            _terminate(pid, timeout_s)
        _pid_file(settings).unlink(missing_ok=True)
        return running


if __name__ == "__main__":
    # Run the canonical module, not a second copy of it named __main__.
    from recops.serving.server import main as _main

    sys.exit(_main())
