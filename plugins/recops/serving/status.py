"""TF Serving's canonical status codes: building ``ServingError`` and mapping to gRPC.

Every front end (gRPC, REST) and the servable runner answer with the same codes, so the
mapping from Python and TensorFlow exceptions to a code lives here once. Only the
standard library is imported at module level; TensorFlow and grpc load when used.
"""

from __future__ import annotations

from typing import Any

from recops.errors import ServingError

__all__ = ["error_from_exception", "grpc_code", "invalid"]


def invalid(message: str) -> ServingError:
    """An ``INVALID_ARGUMENT`` error (HTTP 400), the answer to any malformed request."""
    return ServingError("INVALID_ARGUMENT", message)


def error_from_exception(exc: BaseException) -> ServingError:
    """Map an exception raised by TensorFlow (or anything) to a ServingError."""
    if isinstance(exc, ServingError):
        return exc
    try:
        from recops_models.tf_env import tensorflow

        tf = tensorflow()
        if isinstance(exc, tf.errors.OpError):
            import grpc

            names = {code.value[0]: code.name for code in grpc.StatusCode}
            return ServingError(names.get(exc.error_code, "UNKNOWN"), exc.message)
    except ImportError:  # pragma: no cover - TensorFlow is a dependency
        pass
    if isinstance(exc, (TypeError, ValueError)):
        return invalid(f"{type(exc).__name__}: {exc}")
    return ServingError("INTERNAL", f"{type(exc).__name__}: {exc}")


def grpc_code(name: str) -> Any:
    """The ``grpc.StatusCode`` named ``name`` (``UNKNOWN`` for a name grpc lacks)."""
    import grpc

    return grpc.StatusCode.__members__.get(name, grpc.StatusCode.UNKNOWN)
