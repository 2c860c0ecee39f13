"""Every error recops raises, in one tree, so a caller can tell from the class what to do.

::

    RecopsError                      root: ``except RecopsError`` catches all of ours
    ├── PermanentError               a retry gives the same answer: fail the task at once
    │   ├── DataError                input data that cannot be ingested (names file and field)
    │   │   └── DataValidationError  a partition failed its expectations (report, quarantine)
    │   ├── ParamError               a run-time Param its schema refuses (names the Param)
    │   ├── PromotionError           a promotion refused or failed; serving is as it was
    │   ├── RolloutError             a canary roll-out or rollback failed; config restored
    │   ├── ReplayError              a version that cannot be replayed or did not reproduce
    │   ├── UnsafeArtifactError      an artifact with a pickle, a link or an escaping path
    │   └── CheckpointCorruptError   a backup checkpoint that is truncated or unreadable
    └── TransientError               the world may change: retry with backoff
        ├── LateDataError            the interval's data has not landed yet
        └── UnavailableError         a service (server, worker group, stack) did not answer
            ├── MultiWorkerError     a worker died or the group timed out
            ├── ScaleError           the scale profile's stack is not up or not reachable
            └── RecommendError       the recommend path cannot run (``hint`` says what to do)

``ServingError`` is the model server's per-request status (TF Serving's canonical codes);
whether it is worth retrying follows from its code (``UNAVAILABLE``, ``DEADLINE_EXCEEDED``,
``RESOURCE_EXHAUSTED`` and ``ABORTED`` are).

Several classes also derive from ``ValueError`` or ``RuntimeError``, as they did before
this tree existed, so callers that caught those keep working.

``fail_fast`` is the one place a permanent error becomes Airflow's
``AirflowFailException`` (no retry); the DAG files never list exception classes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

__all__ = [
    "CheckpointCorruptError",
    "DataError",
    "DataValidationError",
    "LateDataError",
    "MultiWorkerError",
    "ParamError",
    "PermanentError",
    "PromotionError",
    "RecommendError",
    "RecopsError",
    "ReplayError",
    "RolloutError",
    "ScaleError",
    "ServingError",
    "TransientError",
    "UnavailableError",
    "UnsafeArtifactError",
    "fail_fast",
    "is_retryable",
]


class RecopsError(Exception):
    """Root of every recops error.

    Attributes:
        retryable: Whether running the same step again can succeed.
    """

    # A class attribute that an instance may refine (``ServingError`` decides by its code).
    retryable: bool = False


class PermanentError(RecopsError):
    """The same inputs fail the same way: bad data, bad Params, a refused promotion."""

    retryable = False


class TransientError(RecopsError):
    """Late data or a service that does not answer: a later attempt may succeed."""

    retryable = True


class DataError(PermanentError, ValueError):
    """Input data that cannot be ingested; the message names the file and field."""


class DataValidationError(DataError):
    """A partition (or a table it references) fails validation or cannot be read.

    Attributes:
        report_uri: Path of the JSON report, when one was written.
        quarantine_uri: Folder the rejected files were copied to, when quarantine is on.
    """

    def __init__(
        self, message: str, *, report_uri: str | None = None, quarantine_uri: str | None = None
    ) -> None:
        super().__init__(message)
        # Keyword-only extras live in __dict__, which BaseException.__reduce__ carries, so the
        # exception survives pickling (Airflow may serialise it) with args == (message,).
        self.report_uri = report_uri
        self.quarantine_uri = quarantine_uri


class ParamError(PermanentError, ValueError):
    """A run-time Param the schema refuses; the message names the Param and the value."""


class PromotionError(PermanentError, RuntimeError):
    """The promotion was refused or failed; serving and aliases are as they were.

    Attributes:
        reasons: Every check that refused it, one sentence each.
    """

    def __init__(self, message: str, *, reasons: list[str] | None = None) -> None:
        super().__init__(message)
        self.reasons = reasons or [message]


class RolloutError(PermanentError, RuntimeError):
    """The roll-out (or rollback) failed; the previous serving config is back in place.

    Attributes:
        reasons: Every check or step that failed, one sentence each.
        rolled_back: Whether the previous config was restored (False only when restoring
            failed too; the message says so).
    """

    def __init__(
        self, message: str, *, reasons: Sequence[str] = (), rolled_back: bool = True
    ) -> None:
        super().__init__(message)
        self.reasons = list(reasons) or [message]
        self.rolled_back = rolled_back


class ReplayError(PermanentError, RuntimeError):
    """The version cannot be replayed (data changed, lineage missing) or did not reproduce."""


class UnsafeArtifactError(PermanentError, ValueError):
    """A registered artifact carries a pickle, a link or a path outside its folder."""


class CheckpointCorruptError(PermanentError, RuntimeError):
    """A backup checkpoint in the output folder is truncated, incomplete or unreadable."""


class LateDataError(TransientError, FileNotFoundError):
    """The data interval's partition has not landed yet; a retry may find it."""


class UnavailableError(TransientError, RuntimeError):
    """A service or process did not answer, or died; a retry may find it up."""


class MultiWorkerError(UnavailableError):
    """A worker failed or the group timed out; the message names it and ends with its log."""


class ScaleError(UnavailableError):
    """The scale stack could not be started, reached or used; the message says why."""


class RecommendError(UnavailableError):
    """The recommend path cannot run; ``hint`` says what to do next.

    Args:
        message: What is missing or failed.
        hint: The command or setting that fixes it.
    """

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


#: TF Serving's canonical status codes and the HTTP status its REST API answers with.
HTTP_STATUS = {
    "OK": 200,
    "CANCELLED": 499,
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401,
    "RESOURCE_EXHAUSTED": 429,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "INTERNAL": 500,
    "UNKNOWN": 500,
}
_RETRYABLE_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED"})


class ServingError(RecopsError):
    """A request or reload failed; ``code`` is the canonical status name (``NOT_FOUND``...)."""

    def __init__(self, code: str, message: str, *, http_status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status if http_status is not None else HTTP_STATUS.get(code, 500)
        self.retryable = code in _RETRYABLE_CODES

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def is_retryable(exc: BaseException) -> bool:
    """Whether a retry can help: ours say so; anything else is assumed transient.

    An exception from outside recops (an OSError, a library bug) is treated as transient
    because Airflow's retries with backoff are the safe default for the unknown.
    """
    if isinstance(exc, RecopsError):
        return bool(exc.retryable)
    return True


@contextmanager
def fail_fast() -> Iterator[None]:
    """Turn a permanent recops error into ``AirflowFailException`` (the task is not retried).

    Transient errors and foreign exceptions pass through unchanged, so the task's
    ``retries`` with backoff handle them.

    Raises:
        airflow.sdk.exceptions.AirflowFailException: For an error that is not retryable,
            with the original message and chained cause.
    """
    try:
        yield
    except RecopsError as exc:
        if is_retryable(exc):
            raise
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(str(exc)) from exc
