"""REST front end: TF Serving's ``/v1/models`` routes on a threading HTTP server.

``GET /v1/models/{name}[/versions/{v}|/labels/{l}][/metadata]`` answers the model status
or metadata; ``POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict`` runs a predict
in the row or columnar JSON format. Errors are ``{"error": "..."}`` with TF Serving's HTTP
status (400 for bad input, 404 for an unknown model, version or label, 413 for a body
over ``max_body_bytes``). A GET's body is read and ignored.

Only the standard library is imported at module level besides the serving modules.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from recops.errors import ServingError
from recops.serving.codec import json_to_tensors, parse_json_body, tensors_to_json
from recops.serving.grpc_api import metadata_response, status_response
from recops.serving.manager import ModelManager
from recops.serving.status import error_from_exception, invalid

__all__ = ["DEFAULT_MAX_BODY_BYTES", "RestHandler", "RestServer"]

log = logging.getLogger("recops.serving")

#: Larger REST bodies get 413 (``RECOPS_SERVING_MAX_BODY_BYTES`` / ``--max-body-bytes``).
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024

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


class RestServer(ThreadingHTTPServer):
    """The HTTP server: one thread per connection, sharing the manager and the body limit."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], manager: ModelManager, max_body_bytes: int
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.manager = manager
        self.max_body_bytes = max_body_bytes
        super().__init__(address, RestHandler)


class RestHandler(BaseHTTPRequestHandler):
    """One connection's requests: routes, body reading and JSON answers."""

    protocol_version = "HTTP/1.1"
    server_version = "recops-model-server"
    timeout = 120  # seconds a client may stall mid-request
    # Headers and body go out in two writes; with Nagle on, the body waits for the
    # client's delayed ACK (~40 ms on Linux) on every keep-alive request.
    disable_nagle_algorithm = True
    server: RestServer

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
            error = error_from_exception(exc)
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
            raise invalid("Missing model name in request.")
        name = urllib.parse.unquote(name)
        label = urllib.parse.unquote(label) if label else None
        number = int(version) if version else None
        manager = self.server.manager
        if subresource:
            servable = manager.resolve(name, number, label)
            return 200, _proto_json(metadata_response(servable, ["signature_def"]))
        return 200, _proto_json(status_response(manager.status(name, number, label)))

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
            raise invalid("'signature_name' key must be a string value.")
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
            raise invalid("Content-Length is not an integer") from None
        if length < 0:
            self.close_connection = True
            raise invalid("Content-Length is negative")
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
            raise invalid(f"Request body ended after {len(body)} of {length} bytes")
        return body
