"""recops.errors: the class alone says whether a retry can help."""

from __future__ import annotations

import pickle

import pytest
from airflow.sdk.exceptions import AirflowFailException
from recops import errors


def test_every_error_descends_from_the_root_on_one_side() -> None:
    classes = [getattr(errors, n) for n in errors.__all__ if n[0].isupper()]
    for cls in classes:
        assert issubclass(cls, errors.RecopsError), cls
        if cls is errors.ServingError:
            continue  # decided per instance, by its status code
        permanent = issubclass(cls, errors.PermanentError)
        transient = issubclass(cls, errors.TransientError)
        assert permanent != transient or cls in (errors.RecopsError,), cls
        assert cls.retryable is transient


def test_serving_error_retryable_by_code() -> None:
    assert errors.ServingError("UNAVAILABLE", "down").retryable
    assert not errors.ServingError("INVALID_ARGUMENT", "bad").retryable
    assert errors.ServingError("NOT_FOUND", "x").http_status == 404


def test_is_retryable_treats_foreign_errors_as_transient() -> None:
    assert errors.is_retryable(OSError("disk"))
    assert not errors.is_retryable(errors.DataError("bad"))
    assert errors.is_retryable(errors.LateDataError("later"))


def test_fail_fast_fails_permanent_errors_and_passes_the_rest() -> None:
    with pytest.raises(AirflowFailException, match="bad rows") as caught:
        with errors.fail_fast():
            raise errors.DataValidationError("bad rows")
    assert isinstance(caught.value.__cause__, errors.DataValidationError)
    with pytest.raises(errors.LateDataError):
        with errors.fail_fast():
            raise errors.LateDataError("not landed")
    with pytest.raises(KeyError):
        with errors.fail_fast():
            raise KeyError("foreign")


def test_old_base_classes_still_catch() -> None:
    # Callers written before the tree caught ValueError / RuntimeError / FileNotFoundError.
    assert issubclass(errors.ParamError, ValueError)
    assert issubclass(errors.PromotionError, RuntimeError)
    assert issubclass(errors.LateDataError, FileNotFoundError)


def test_errors_with_extras_survive_pickling() -> None:
    exc = errors.DataValidationError("m", report_uri="r.json", quarantine_uri="q")
    back = pickle.loads(pickle.dumps(exc))
    assert (str(back), back.report_uri, back.quarantine_uri) == ("m", "r.json", "q")
