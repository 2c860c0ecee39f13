"""SavedModel servables: one loaded version, its signatures, and running them.

``read_signature_defs`` reads a version folder's ``serve`` SignatureDefs without loading
the model; ``Servable`` loads one version with ``tf.saved_model.load`` and runs a signature
after checking the inputs against it; ``load_servable`` (the model manager's default
loader) also replays the version's warmup records (``WARMUP_FILE``).

TensorFlow and the protos are imported inside the functions that need them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from recops_models.tf_env import tensorflow

from recops.errors import ServingError
from recops.serving.codec import TensorMeta, tensor_proto_to_array
from recops.serving.status import error_from_exception, invalid

if TYPE_CHECKING:
    from tensorflow.core.protobuf.meta_graph_pb2 import SignatureDef

__all__ = [
    "DEFAULT_SIGNATURE",
    "MAX_WARMUP_RECORDS",
    "WARMUP_FILE",
    "Servable",
    "SignatureIO",
    "load_servable",
    "read_signature_defs",
]

log = logging.getLogger("recops.serving")

DEFAULT_SIGNATURE = "serving_default"
#: Warmup records, relative to a version folder (TF Serving's name and place).
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
#: TF Serving refuses more warmup records than this.
MAX_WARMUP_RECORDS = 1000


def read_signature_defs(version_dir: str | os.PathLike[str]) -> dict[str, SignatureDef]:
    """The ``serve`` MetaGraph's SignatureDefs, read from ``saved_model.pb(txt)``."""
    tensorflow()  # the protos below import TensorFlow: select tf_keras first
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
    tf = tensorflow()

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


Runner = Callable[[Mapping[str, np.ndarray]], Mapping[str, Any]]


def _runner(function: Any, io: SignatureIO) -> Runner:
    """How ``run`` calls one loaded signature: checked arrays in, output tensors out.

    A loaded signature called by keyword (``function(**tensors)``) binds its arguments
    to its ``FunctionType`` on every call, about 0.2 ms of Python on a 0.4 ms model.
    A signature's parameters are keyword-only tensors, and TensorFlow flattens those in
    name order (``FunctionType.unpack_inputs``), so this calls the same graph with that
    flat list through ``_call_flat``, where the keyword call ends, once ``run`` has done
    the dtype and shape checks the binding would. A function of any other shape (or a
    TensorFlow without ``_call_flat``) keeps the keyword call.
    """
    import inspect

    tf = tensorflow()

    dtypes = {name: tf.as_dtype(meta.dtype) for name, meta in io.inputs.items()}
    # ``run`` has checked each array's dtype already: ``tf.constant`` makes the same
    # tensor as ``tf.convert_to_tensor`` without its dispatch layers (10 us, not 17).
    convert = tf.constant

    def by_keyword(inputs: Mapping[str, np.ndarray]) -> Mapping[str, Any]:
        result: Mapping[str, Any] = function(
            **{name: convert(a, dtype=dtypes[name]) for name, a in inputs.items()}
        )
        return result

    call_flat = getattr(function, "_call_flat", None)
    function_type = getattr(function, "function_type", None)
    if function_type is None:
        return by_keyword
    parameters = list(function_type.parameters.values())
    if (
        call_flat is None
        or not hasattr(function, "captured_inputs")
        or {p.name for p in parameters} != set(io.inputs)
        or any(p.kind is not inspect.Parameter.KEYWORD_ONLY for p in parameters)
        or len(function_type.flat_inputs) != len(parameters)
    ):
        return by_keyword
    order = [(name, dtypes[name]) for name in sorted(io.inputs)]

    def flat(inputs: Mapping[str, np.ndarray]) -> Mapping[str, Any]:
        # captured_inputs is read per call, as the keyword call reads it.
        result: Mapping[str, Any] = call_flat(
            [convert(inputs[name], dtype=dtype) for name, dtype in order],
            function.captured_inputs,
        )
        return result

    return flat


class Servable:
    """One loaded version: the TF object, its SignatureDefs, and ``run``.

    Requests hold a reference to the Servable they resolved, so an unload (the manager
    dropping its reference) never breaks a request already in flight.
    """

    def __init__(self, name: str, version: int, path: Path) -> None:
        tf = tensorflow()

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
        self._runners = {
            key: _runner(self._functions[key], io) for key, io in self.signatures.items()
        }

    def signature(self, name: str) -> SignatureIO:
        key = name or DEFAULT_SIGNATURE
        try:
            return self.signatures[key]
        except KeyError:
            raise invalid(f'Serving signature name: "{key}" not found in signature def') from None

    def run(
        self,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
    ) -> dict[str, np.ndarray]:
        """Run one signature; inputs are checked against the SignatureDef first."""
        key = signature_name or DEFAULT_SIGNATURE
        signature = self.signature(key)
        if inputs.keys() != signature.inputs.keys():
            sent, wanted = set(inputs), set(signature.inputs)
            raise invalid(
                f"input size does not match signature: {len(sent)}!={len(wanted)} "
                f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(wanted))}}}). "
                f"Sent extra: {{{','.join(sorted(sent - wanted))}}}. "
                f"Missing but required: {{{','.join(sorted(wanted - sent))}}}."
            )
        unknown = [name for name in output_filter if name not in signature.outputs]
        if unknown:
            raise invalid(f"output tensor alias not found in signature: {', '.join(unknown)}")
        for name, array in inputs.items():
            meta = signature.inputs[name]
            if _array_dtype_name(array) != meta.dtype:
                raise invalid(
                    f"Expects arg[{name}] to be {meta.dtype} but {_array_dtype_name(array)} "
                    "is provided"
                )
            if not meta.compatible(array.shape):
                raise invalid(
                    f"Input {name} has shape {list(array.shape)}, but the signature expects "
                    f"{meta.describe_shape()}"
                )
        try:
            result = self._runners[key](inputs)
        except Exception as exc:
            raise error_from_exception(exc) from exc
        keep = set(output_filter) or set(result)
        return {name: value.numpy() for name, value in result.items() if name in keep}

    def warmup(self) -> int:
        """Replay ``assets.extra/tf_serving_warmup_requests``; returns the record count."""
        path = self.path / WARMUP_FILE
        if not path.is_file():
            return 0
        tf = tensorflow()
        from tensorflow_serving.apis import prediction_log_pb2

        count = 0
        for record in tf.data.TFRecordDataset(str(path)):
            count += 1
            if count > MAX_WARMUP_RECORDS:
                raise invalid(
                    f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS})"
                )
            entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            kind = entry.WhichOneof("log_type")
            if kind != "predict_log":
                raise ServingError("UNIMPLEMENTED", f"Unsupported log_type for warmup: {kind}")
            request = entry.predict_log.request
            arrays = {k: tensor_proto_to_array(v) for k, v in request.inputs.items()}
            self.run(request.model_spec.signature_name, arrays, list(request.output_filter))
        return count


def load_servable(name: str, version: int, path: Path) -> Servable:
    """Load a SavedModel version and replay its warmup records (the default loader)."""
    servable = Servable(name, version, path)
    records = servable.warmup()
    if records:
        log.info("model %s version %d: replayed %d warmup records", name, version, records)
    return servable
