"""One evaluated check, flattened for the report and the error message.

A GX expectation result and a drift metric both become a ``Check``; ``describe`` renders
it as one readable line (``expect_x(column=c, min=1, max=5): 3 unexpected values, e.g.
[0, 7, 9]``) and ``to_dict`` as one entry of the JSON report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_LISTED", "SAMPLE_IN_MESSAGE", "Check", "dedupe", "fmt", "summarise"]

# Lists longer than this (id sets for referential checks) are summarised in messages/reports.
MAX_LISTED = 10
SAMPLE_IN_MESSAGE = 5


@dataclass(frozen=True)
class Check:
    """One evaluated check (a GX expectation or a drift metric), flattened for reporting."""

    table: str
    expectation_type: str
    kwargs: dict[str, Any]
    success: bool
    observed_value: Any = None
    unexpected_count: int | None = None
    unexpected_sample: list[Any] | None = None
    details: Any = None
    error: str | None = None
    check: str = ""
    severity: str = "fail"

    @property
    def columns(self) -> list[str]:
        """The column(s) the check is about (empty for table-level checks)."""
        if "column" in self.kwargs:
            return [str(self.kwargs["column"])]
        return [str(c) for c in self.kwargs.get("column_list", [])]

    def to_dict(self) -> dict[str, Any]:
        """The check as one entry of the report's ``expectations`` list."""
        return {
            "check": self.check,
            "severity": self.severity,
            "table": self.table,
            "expectation_type": self.expectation_type,
            "columns": self.columns,
            "kwargs": self.kwargs,
            "success": self.success,
            "observed_value": self.observed_value,
            "unexpected_count": self.unexpected_count,
            "unexpected_sample": self.unexpected_sample,
            "details": self.details,
            "error": self.error,
        }

    def describe(self) -> str:
        """``expect_x(column=c, min=1, max=5): 3 unexpected values, e.g. [0, 7, 9]``."""
        short = {"min_value": "min", "max_value": "max", "type_": "type", "column_list": "columns"}
        args = ", ".join(f"{short.get(k, k)}={fmt(v)}" for k, v in self.kwargs.items())
        return f"{self.expectation_type}({args}): {self._outcome()}"

    def _outcome(self) -> str:
        if self.error:
            return f"raised {self.error}"
        if self.unexpected_count:
            noun = "value" if self.unexpected_count == 1 else "values"
            sample = dedupe(self.unexpected_sample or [])[:SAMPLE_IN_MESSAGE]
            return f"{self.unexpected_count} unexpected {noun}, e.g. {fmt(sample)}"
        text = f"observed {fmt(self.observed_value)}"
        if self.details:
            text += f" ({json.dumps(self.details, default=str)})"
        return text


def summarise(value: Any) -> Any:
    """A list longer than ``MAX_LISTED`` becomes ``{"n_values": n, "first": [...]}``."""
    if isinstance(value, list) and len(value) > MAX_LISTED:
        return {"n_values": len(value), "first": value[:MAX_LISTED]}
    return value


def dedupe(values: list[Any]) -> list[Any]:
    """``values`` without repeats, in first-seen order (values need not be hashable)."""
    seen: list[Any] = []
    for value in values:
        if value not in seen:
            seen.append(value)
    return seen


def fmt(value: Any) -> str:
    """Render a kwarg or observed value compactly for a one-line message."""
    if isinstance(value, dict) and set(value) == {"n_values", "first"}:
        return f"<{value['n_values']} values>"
    if isinstance(value, list):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {fmt(v)}" for k, v in value.items()) + "}"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
