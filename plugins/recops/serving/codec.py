"""REST JSON <-> tensors: the one place where TF Serving's JSON formats are handled.

Request bodies are parsed here (``parse_json_body``, with the nesting-depth guard that runs
before ``json.loads``), converted to named numpy arrays against a signature's
``TensorMeta`` (``json_to_tensors``, row and columnar formats), and predict outputs are
written back as TF Serving writes them (``tensors_to_json``). gRPC ``TensorProto`` inputs
become arrays through ``tensor_proto_to_array``, which refuses oversized shapes first.

Only the standard library and numpy are imported at module level.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from recops.errors import ServingError
from recops.serving.status import invalid

__all__ = [
    "GRPC_MAX_MESSAGE_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_TENSOR_ELEMENTS",
    "TensorMeta",
    "json_depth",
    "json_to_tensors",
    "parse_json_body",
    "tensor_proto_to_array",
    "tensors_to_json",
]

#: Deeper JSON is rejected before it is parsed (CVE-2025-0649 crashed TF Serving on it).
MAX_JSON_DEPTH = 100
GRPC_MAX_MESSAGE_BYTES = 256 * 1024 * 1024
#: Largest tensor a request may ask for (what a full-size gRPC message of floats holds).
MAX_TENSOR_ELEMENTS = GRPC_MAX_MESSAGE_BYTES // 4


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
        raise invalid("JSON Parse error: The document is empty")
    depth = json_depth(body)
    if depth > max_depth:
        raise invalid(f"JSON Parse error: nesting depth {depth} exceeds the limit of {max_depth}")
    try:
        doc = json.loads(body)
    except RecursionError as exc:  # belt and braces; the depth check should stop it first
        raise invalid("JSON Parse error: document nested too deeply") from exc
    except UnicodeDecodeError as exc:
        raise invalid(f"JSON Parse error: body is not UTF-8: {exc}") from exc
    except ValueError as exc:  # json.JSONDecodeError and int-digit limits
        raise invalid(f"JSON Parse error: {exc}") from exc
    if not isinstance(doc, dict):
        raise invalid(f"JSON Value: {_snippet(doc)} Is not object")
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
        return invalid(
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
                    raise invalid("Unable to base64 decode") from exc
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
                raise invalid(f"JSON Value: {_snippet(value)} is out of range for type: {dtype}")
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
                raise invalid(
                    f"Encountered list at unexpected level: {level} expected < {len(shape)}"
                )
            if len(item) != shape[level]:
                raise invalid(
                    f"Encountered list at unexpected size: {len(item)} at level: {level} "
                    f"expected size: {shape[level]}"
                )
            for element in item:
                fill(element, level + 1)
            return
        if level != len(shape):
            raise invalid(
                f"JSON Value: {_snippet(item)} found at incorrect level: {level + 1} "
                f"in the JSON DOM. Expected at level: {len(shape)}"
            )
        if isinstance(item, dict) and not (meta.dtype == "string" and _is_b64(item)):
            raise invalid(
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
        raise invalid("Failed to get input map for signature")
    if "instances" in doc and "inputs" in doc:
        raise invalid("Not formatted correctly: expecting only one of 'inputs' or 'instances' keys")
    if "instances" in doc:
        return _instances_to_tensors(doc["instances"], inputs), "row"
    if "inputs" in doc:
        return _inputs_to_tensors(doc["inputs"], inputs), "columnar"
    raise invalid("Missing 'inputs' or 'instances' key")


def _instances_to_tensors(
    instances: Any, inputs: Mapping[str, TensorMeta]
) -> dict[str, np.ndarray]:
    if not isinstance(instances, list):
        raise invalid("Expecting 'instances' to be an list/array")
    if not instances:
        raise invalid("No values in 'instances' array")
    named = isinstance(instances[0], dict) and not _is_b64(instances[0])
    if not named and len(inputs) > 1:
        raise invalid(
            "instances is a plain list, but expecting list of objects as multiple input "
            f"tensors required as per signature: {', '.join(sorted(inputs))}"
        )
    rows: dict[str, list[np.ndarray]] = {name: [] for name in inputs}
    only = next(iter(inputs))
    for index, instance in enumerate(instances):
        is_object = isinstance(instance, dict) and not _is_b64(instance)
        if is_object != named:
            expected = "object" if named else "value/list"
            raise invalid(f"Expecting {expected} at item {index} of 'instances' list")
        items = instance if named else {only: instance}
        if set(items) != set(inputs):
            raise invalid(
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
                raise invalid(
                    f"Failed to process element: {index} key: {name} of 'instances' list. "
                    f"Expecting shape {list(rows[name][0].shape)} but got: {list(array.shape)}"
                )
            rows[name].append(array)
    return {name: np.stack(arrays) for name, arrays in rows.items()}


def _inputs_to_tensors(value: Any, inputs: Mapping[str, TensorMeta]) -> dict[str, np.ndarray]:
    if not isinstance(value, dict) or _is_b64(value):
        if len(inputs) > 1:
            raise invalid(
                "inputs is a plain value/list, but expecting an object as multiple input "
                f"tensors required as per signature: {', '.join(sorted(inputs))}"
            )
        name = next(iter(inputs))
        return {name: _json_to_array(value, inputs[name])}
    arrays = {}
    for name, meta in inputs.items():
        if name not in value:
            raise invalid(f"Missing named input: {name} in 'inputs' object.")
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
        raise invalid("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    if fmt == "columnar":
        if len(names) == 1:
            return {"outputs": _to_json_value(outputs[names[0]], names[0])}
        return {"outputs": {name: _to_json_value(outputs[name], name) for name in names}}
    batch = None
    for name in names:
        array = outputs[name]
        if array.ndim == 0:
            raise invalid(f"Tensor name: {name} has no shape information ")
        if batch is not None and array.shape[0] != batch:
            raise invalid(
                f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} "
                f"expecting: {batch}"
            )
        batch = array.shape[0]
    columns = {name: _to_json_value(outputs[name], name) for name in names}
    if len(names) == 1:
        return {"predictions": columns[names[0]]}
    return {
        "predictions": [{name: columns[name][row] for name in names} for row in range(batch or 0)]
    }


def tensor_proto_to_array(proto: Any) -> np.ndarray:
    """A gRPC ``TensorProto`` as a numpy array; INVALID_ARGUMENT if it is malformed or huge."""
    from recops_models.tf_env import tensorflow

    tf = tensorflow()

    # A TensorProto may claim a huge shape and carry one value to broadcast; refuse before
    # numpy tries to allocate it.
    dims = [d.size for d in proto.tensor_shape.dim]
    if any(d < 0 for d in dims):
        raise invalid(f"TensorProto has a negative dimension: {dims}")
    if math.prod(dims) > MAX_TENSOR_ELEMENTS:
        raise invalid(f"TensorProto of shape {dims} exceeds {MAX_TENSOR_ELEMENTS} elements")
    try:
        return np.asarray(tf.make_ndarray(proto))
    except Exception as exc:
        raise invalid(f"Malformed TensorProto: {type(exc).__name__}: {exc}") from exc
