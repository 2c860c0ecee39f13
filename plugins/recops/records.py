"""The one way stage configs and results become plain dicts and back.

Stage results travel through Airflow's XCom and are cached as ``result.json`` beside
their outputs, so each needs a JSON-able dict form; this mixin gives all of them the same
one instead of a copy per stage.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Self


class Record:
    """Mixin for frozen dataclasses: ``to_dict`` and a tolerant ``from_dict``."""

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-serialisable dict (for XCom and result.json)."""
        fields: dict[str, Any] = dataclasses.asdict(self)  # type: ignore[call-overload]
        return fields

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Self:
        """Rebuild from ``to_dict`` output, ignoring keys this version does not know.

        Unknown keys are dropped so a cached result written by an older or newer version
        still loads; a missing required field still raises ``TypeError``.
        """
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in raw.items() if k in names})
