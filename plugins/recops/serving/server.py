"""A TF Serving-compatible model server for SavedModels, built on ``tensorflow-serving-api``.

No TF Serving binary can be installed where recops runs, so this package serves the same
API from Python: gRPC (``PredictionService`` / ``ModelService``) on ``grpc_port`` and REST
(``/v1/models/...``) on ``rest_port``, binding 127.0.0.1 unless told otherwise. Models
come from ``models.config`` (a ``ModelServerConfig`` text proto) and load from
``<base_path>/<version>/``; warmup records are replayed on load.

This module is the entry point: ``ModelServer`` puts the front ends over one manager and
``main`` (``python -m recops.serving.server``) runs it in the foreground. The concerns
live in sibling modules, and the names other code imports from here are re-exported:

- ``recops.serving.status``: canonical status codes, exceptions -> ``ServingError``;
- ``recops.serving.codec``: REST JSON <-> tensors, body parsing and the depth guard;
- ``recops.serving.servable``: one loaded SavedModel version, its signatures, warmup;
- ``recops.serving.manager``: ``ModelManager`` (config reloads, version states, labels);
- ``recops.serving.grpc_api``: the gRPC ``PredictionService`` / ``ModelService``;
- ``recops.serving.rest_api``: the REST routes;
- ``recops.serving.daemon``: ``start_background`` / ``stop_background`` / ``is_running``,
  pid files, health probes and the state-folder lock.

Only the standard library and numpy are imported here at module level; TensorFlow, grpc
and the protos are imported where they are used, so the background helpers stay cheap.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recops_models.tf_env import tensorflow, use_legacy_keras
from recops_models.tf_env import tensorflow as import_tensorflow

from recops.errors import ServingError, UnavailableError
from recops.serving.codec import (
    GRPC_MAX_MESSAGE_BYTES,
    MAX_JSON_DEPTH,
    MAX_TENSOR_ELEMENTS,
    TensorMeta,
    json_depth,
    json_to_tensors,
    parse_json_body,
    tensors_to_json,
)
from recops.serving.daemon import (
    answers,
    grpc_host,
    is_running,
    locked,
    pid_file,
    rest_answers,
    start_background,
    stop_background,
    write_pid,
)
from recops.serving.grpc_api import GrpcServices
from recops.serving.manager import ModelManager, VersionStatus
from recops.serving.rest_api import DEFAULT_MAX_BODY_BYTES, RestServer
from recops.serving.servable import (
    DEFAULT_SIGNATURE,
    MAX_WARMUP_RECORDS,
    WARMUP_FILE,
    Servable,
    SignatureIO,
    load_servable,
    read_signature_defs,
)

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_SIGNATURE",
    "GRPC_MAX_MESSAGE_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_TENSOR_ELEMENTS",
    "MAX_WARMUP_RECORDS",
    "WARMUP_FILE",
    "ModelManager",
    "ModelServer",
    "Servable",
    "ServingError",
    "SignatureIO",
    "TensorMeta",
    "VersionStatus",
    "answers",
    "import_tensorflow",
    "is_running",
    "json_depth",
    "json_to_tensors",
    "load_servable",
    "locked",
    "main",
    "parse_json_body",
    "read_signature_defs",
    "rest_answers",
    "start_background",
    "stop_background",
    "tensors_to_json",
]

log = logging.getLogger("recops.serving")


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
        self._rest: RestServer | None = None
        self._rest_thread: threading.Thread | None = None
        self.grpc_port = grpc_port
        self.rest_port = rest_port

    def start(self) -> None:
        """Load the configured models (a failed model is logged, not fatal), then listen."""
        from concurrent import futures

        import grpc

        from recops.serving.models_config import empty_config, read_config

        tensorflow()  # the protos below import TensorFlow: select tf_keras first
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

        services = GrpcServices(self.manager)
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
            f"{grpc_host(self.host)}:{self._wanted_ports[0]}"
        )
        if not self.grpc_port:
            raise UnavailableError(f"cannot bind gRPC port {self.host}:{self._wanted_ports[0]}")
        self._rest = RestServer(
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
        """Stop both front ends; gRPC calls in flight get ``grace_s`` seconds to finish."""
        if self._rest is not None:
            self._rest.shutdown()
            self._rest.server_close()
            self._rest = None
        if self._grpc is not None:
            self._grpc.stop(grace_s).wait()
            self._grpc = None


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
        default=pid_file(settings),
        help="where to record this process id while it serves (found by start/stop_background)",
    )
    args = parser.parse_args(argv)
    use_legacy_keras()
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
    write_pid(args.pidfile, os.getpid())
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


if __name__ == "__main__":
    # Run the canonical module, not a second copy of it named __main__.
    from recops.serving.server import main as _main

    sys.exit(_main())
