"""The dataset spec: one YAML file per dataset declares its keys, events and attributes.

``DatasetSpec`` is the typed model of that file (pydantic, unknown keys refused) and
``load_spec`` reads and checks one file; every error is a ``DataError`` naming the file and
the spec field. ``recops.dataset_check`` checks data frames against a spec.
``docs/datasets.md`` documents the fields one by one.

This module is light: pydantic at import, YAML only inside the functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from recops.config import SPLIT_SEED
from recops.errors import DataError
from recops.params import HISTORY_MAX

__all__ = [
    "ATTRIBUTE_KINDS", "AllowedConstraint", "Attribute", "DatasetSpec", "EvaluationSpec",
    "EventTypeSpec", "EventsSpec", "FilesSpec", "NotNullConstraint", "RandomSplit",
    "HINT", "KeyType", "RESERVED_NAMES", "RangeConstraint", "TableSpec", "TimestampFormat",
    "TimestampSpec", "TrainingSpec", "ValueSpec", "is_time_pattern", "load_spec", "spec_to_yaml",
]  # fmt: skip

KeyType: TypeAlias = Literal["string", "integer"]
AttributeKind: TypeAlias = Literal[
    "categorical", "multi_categorical", "numeric", "text", "timestamp"
]
Severity: TypeAlias = Literal["fail", "warn"]
TimestampFormat: TypeAlias = Literal["unix_seconds", "unix_milliseconds", "iso8601"]
Protocol: TypeAlias = Literal["random", "temporal"]
#: The ways a spec may name how its times are written; any other format is a strftime
#: pattern (``is_time_pattern``).
TIME_FORMATS: tuple[str, ...] = get_args(TimestampFormat)
Scalar: TypeAlias = str | int | float
ColumnName: TypeAlias = Annotated[str, Field(min_length=1)]

#: The kinds an attribute may have, in the order the docs list them.
ATTRIBUTE_KINDS: tuple[str, ...] = get_args(AttributeKind)
#: A dataset name becomes a folder, a Feast project and a model-name prefix, so it is kept to
#: characters that are safe in all three (no dots, so no ``..``; no slashes).
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"
_NAME_CHARS = frozenset(_ALNUM + "-")
#: An attribute name becomes a feature and a model-input name: no '-' there.
_ATTRIBUTE_CHARS = frozenset(_ALNUM)
_MAX_NAME = 64
#: Columns every published table already has (``recops.layout``): no attribute may be one.
RESERVED_NAMES = frozenset({"user_id", "item_id", "event_timestamp", "event_type", "weight"})
#: The last line of every spec error: where the fields are documented.
HINT = "hint: docs/datasets.md describes every field of a dataset spec"


class _FieldError(ValueError):
    """A cross-field check failed at ``loc`` below the model that raised it."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


class _Spec(BaseModel):
    # Frozen and strict about keys: a typo in a spec is an error, never a silent default.
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_name(value: str, what: str, chars: frozenset[str] = _NAME_CHARS) -> str:
    first_ok = bool(value) and value[0].isascii() and value[0].isalpha()
    if not first_ok or len(value) > _MAX_NAME or not set(value) <= chars:
        others = "letters, digits, '_' or '-'" if "-" in chars else "letters, digits or '_'"
        raise ValueError(
            f"{what} {value!r} must be a letter then {others} (at most {_MAX_NAME} characters)"
        )
    return value


def _pair(value: Any) -> Any:
    # The short form ``[low, high]`` of a range; the long form is a mapping.
    if isinstance(value, list | tuple):
        if len(value) != 2:
            raise ValueError(f"a range is [low, high], got {len(value)} values")
        return {"low": value[0], "high": value[1]}
    return value


class RangeConstraint(_Spec):
    """``[low, high]``, inclusive; one end may be null (unbounded)."""

    low: float | None = None
    high: float | None = None
    severity: Severity = "fail"

    @model_validator(mode="after")
    def _ordered(self) -> RangeConstraint:
        if self.low is None and self.high is None:
            raise ValueError("a range needs low, high or both")
        if self.low is not None and self.high is not None and not self.low < self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        return self


class AllowedConstraint(_Spec):
    """The values a column may hold (each element, for a multi-valued categorical)."""

    values: tuple[Scalar, ...] = Field(min_length=1)
    severity: Severity = "fail"

    @field_validator("values", mode="before")
    @classmethod
    def _scalars(cls, values: Any) -> Any:
        # One clear error per value, not one per member of the str | int | float union.
        listed = list(values) if isinstance(values, list | tuple) else []
        for i, value in enumerate(listed):
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise _FieldError((i,), f"a value is a string or a number, got {value!r}")
        repeated = sorted({str(v) for v in listed if listed.count(v) > 1})
        if repeated:
            raise ValueError(f"values repeat: {', '.join(repeated)}")
        return values


def _not_null_short(value: Any) -> Any:
    # ``not_null: true`` is the short form of ``not_null: {severity: fail}``.
    return {} if value is True else (None if value is False else value)


def _allowed_short(value: Any) -> Any:
    # ``allowed: [a, b]`` is the short form of ``allowed: {values: [a, b]}``.
    return {"values": value} if isinstance(value, list | tuple) else value


class NotNullConstraint(_Spec):
    """The column may not hold empty values."""

    severity: Severity = "fail"


class Attribute(_Spec):
    """One user or item attribute: the feature ``name`` read from the file's ``column``."""

    name: str
    column: ColumnName
    kind: AttributeKind
    separator: str | None = Field(default=None, min_length=1)
    not_null: Annotated[NotNullConstraint | None, BeforeValidator(_not_null_short)] = None
    allowed: Annotated[AllowedConstraint | None, BeforeValidator(_allowed_short)] = None
    range: Annotated[RangeConstraint | None, BeforeValidator(_pair)] = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if value in RESERVED_NAMES:
            reserved = ", ".join(sorted(RESERVED_NAMES))
            raise ValueError(f"attribute name {value!r} is reserved ({reserved}); rename it")
        return _check_name(value, "attribute name", _ATTRIBUTE_CHARS)

    @model_validator(mode="after")
    def _fits_kind(self) -> Attribute:
        multi = self.kind == "multi_categorical"
        if multi and self.separator is None:
            raise _FieldError(("separator",), "a multi_categorical attribute needs a separator")
        if not multi and self.separator is not None:
            raise _FieldError(("separator",), f"only multi_categorical takes one, not {self.kind}")
        if self.allowed is not None and self.kind in ("text", "timestamp"):
            raise _FieldError(("allowed",), f"a {self.kind} attribute takes no allowed set")
        if self.range is not None and self.kind != "numeric":
            raise _FieldError(("range",), f"only numeric takes a range, not {self.kind}")
        return self


class TableSpec(_Spec):
    """The users or items table: its key column, the key's type and its attributes."""

    key: ColumnName
    key_type: KeyType
    attributes: tuple[Attribute, ...] = ()

    @model_validator(mode="after")
    def _distinct(self) -> TableSpec:
        seen: dict[str, int] = {}
        for i, attr in enumerate(self.attributes):
            if attr.column == self.key:
                raise _FieldError(("attributes", i, "column"), f"{attr.column!r} is the key")
            if attr.column in seen:
                raise _FieldError(
                    ("attributes", i, "column"),
                    f"{attr.column!r} is already attributes[{seen[attr.column]}]'s column",
                )
            seen[attr.column] = i
        return self


def is_time_pattern(fmt: str) -> bool:
    """True when a timestamp ``format`` is a strftime pattern, not a named format."""
    return fmt not in TIME_FORMATS


class TimestampSpec(_Spec):
    """The events' time column and how it is written.

    ``format`` is ``unix_seconds``, ``unix_milliseconds``, ``iso8601`` or a strftime
    pattern such as ``%d/%m/%Y %H:%M`` (times without an offset are UTC).
    """

    column: ColumnName
    format: str = "unix_seconds"

    @field_validator("format")
    @classmethod
    def _format(cls, value: str) -> str:
        if value in TIME_FORMATS:
            return value
        named = ", ".join(TIME_FORMATS)
        if "%" not in value:
            raise ValueError(
                f"format {value!r} is none of {named} and no strftime pattern "
                "(such as '%d/%m/%Y %H:%M')"
            )
        from datetime import UTC, datetime

        # A pattern must write a time it can read back to the same day: one without a
        # year, month or day would stamp every event on one date.
        sample = datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)
        try:
            back = datetime.strptime(sample.strftime(value), value)
        except ValueError as exc:
            raise ValueError(f"format {value!r} is not a strftime pattern: {exc}") from None
        if back.date() != sample.date():
            raise ValueError(
                f"format {value!r} does not hold a full date (a year, month and day, e.g. "
                "'%d/%m/%Y %H:%M')"
            )
        return value


class EventTypeSpec(_Spec):
    """The event-type column, a weight per type, the types that count as positives and
    the types that say the user did not want the item (``negatives``: a skip, a removal
    from the cart). A negative event is never a training positive nor a hit; the ranker
    learns it as a shown-and-refused example."""

    column: ColumnName
    weights: dict[str, float] = Field(min_length=1)
    positives: tuple[str, ...] | None = None
    negatives: tuple[str, ...] | None = None

    @field_validator("weights")
    @classmethod
    def _positive_weights(cls, weights: dict[str, float]) -> dict[str, float]:
        for name, weight in weights.items():
            if not name:
                raise ValueError("an event type's name may not be empty")
            if not weight > 0:
                raise _FieldError((name,), f"a weight must be above 0, got {weight:g}")
        return weights

    @model_validator(mode="after")
    def _declared(self) -> EventTypeSpec:
        for i, name in enumerate(self.positives or ()):
            if name not in self.weights:
                raise _FieldError(
                    ("positives", i),
                    f"{name!r} is not a declared event type ({', '.join(self.weights)})",
                )
        if self.positives is not None and not self.positives:
            raise _FieldError(("positives",), "name at least one type, or leave it out (all)")
        for i, name in enumerate(self.negatives or ()):
            if name not in self.weights:
                raise _FieldError(
                    ("negatives", i),
                    f"{name!r} is not a declared event type ({', '.join(self.weights)})",
                )
            if name in (self.positives or ()):
                raise _FieldError(
                    ("negatives", i), f"{name!r} is a positive too; an event type is one or other"
                )
        if self.negatives is not None and set(self.negatives) >= set(self.weights):
            raise _FieldError(
                ("negatives",), "every event type is negative; leave at least one to learn from"
            )
        return self


class ValueSpec(_Spec):
    """An explicit value per event (a rating) and its range."""

    column: ColumnName
    range: Annotated[RangeConstraint, BeforeValidator(_pair)]

    @model_validator(mode="after")
    def _bounded(self) -> ValueSpec:
        if self.range.low is None or self.range.high is None:
            raise _FieldError(("range",), "a value's range needs both low and high")
        return self


class EventsSpec(_Spec):
    """The events table: who (user key), what (item key), when, and optionally how."""

    user_key: ColumnName
    item_key: ColumnName
    timestamp: TimestampSpec
    event_type: EventTypeSpec | None = None
    value: ValueSpec | None = None


class RandomSplit(_Spec):
    """The per-user random split's shares and seed (RecBole's protocol)."""

    train: float = Field(default=0.8, gt=0, lt=1)
    valid: float = Field(default=0.1, gt=0, lt=1)
    test: float = Field(default=0.1, gt=0, lt=1)
    seed: int = SPLIT_SEED

    @model_validator(mode="after")
    def _sums_to_one(self) -> RandomSplit:
        total = self.train + self.valid + self.test
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"train + valid + test must be 1, got {total:g}")
        return self


class EvaluationSpec(_Spec):
    """The evaluation protocols (the first is the default) and their knobs."""

    protocols: tuple[Protocol, ...] = Field(default=("random",), min_length=1)
    random_split: RandomSplit = RandomSplit()
    temporal_cut: float = Field(default=0.9, gt=0, lt=1)

    @field_validator("protocols")
    @classmethod
    def _unique(cls, protocols: tuple[Protocol, ...]) -> tuple[Protocol, ...]:
        if len(set(protocols)) != len(protocols):
            raise ValueError("a protocol is named twice")
        return protocols

    @model_validator(mode="after")
    def _cut_leaves_train(self) -> EvaluationSpec:
        if self.temporal_cut <= self.random_split.valid:
            raise ValueError(
                f"temporal_cut ({self.temporal_cut:g}) must be above random_split.valid "
                f"({self.random_split.valid:g}): the temporal split's valid share comes out "
                "of the events before the cut, and train needs the rest"
            )
        return self

    def shares(self, protocol: str) -> tuple[float, float, float]:
        """Each user's train, valid and test shares under ``protocol``.

        ``random``: ``random_split``'s. ``temporal``: the events after ``temporal_cut``
        (in each user's own time order) are test, the ``random_split.valid`` share before
        them valid, and the rest train. Rounded to 9 digits, so ``1 - 0.9`` counts a tenth
        of ten rows as one row (``split_counts`` truncates).
        """
        if protocol == "random":
            split = self.random_split
            raw = (split.train, split.valid, split.test)
        else:
            valid, test = self.random_split.valid, 1.0 - self.temporal_cut
            raw = (1.0 - valid - test, valid, test)
        return (round(raw[0], 9), round(raw[1], 9), round(raw[2], 9))


class FilesSpec(_Spec):
    """Where the tables live, relative to the spec file."""

    events: ColumnName
    users: str | None = Field(default=None, min_length=1)
    items: str | None = Field(default=None, min_length=1)


class TrainingSpec(_Spec):
    """What this dataset's runs train with when a run's Params leave a choice unset."""

    history_length: int | None = Field(default=None, ge=0, le=HISTORY_MAX)


class DatasetSpec(_Spec):
    """One dataset, declared: ``load_spec`` builds it from a YAML file.

    Attributes:
        name: Names the dataset's folder, Feast project and registered models.
        users: The users table's key and attributes.
        items: The items table's key and attributes.
        events: The events table's columns.
        evaluation: The evaluation protocols and their knobs.
        seen: Event types that make an item "seen" (never recommended again); None: all.
        files: Where the tables live, relative to the spec file; None: given elsewhere.
        training: Training defaults for this dataset (``history_length``: what the
            ``history_length`` Param means when a run leaves it empty; None: 0).
    """

    name: str
    users: TableSpec
    items: TableSpec
    events: EventsSpec
    evaluation: EvaluationSpec = EvaluationSpec()
    training: TrainingSpec = TrainingSpec()
    seen: tuple[str, ...] | None = None
    files: FilesSpec | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_name(value, "dataset name")

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSpec:
        names: dict[str, str] = {}
        for table in ("users", "items"):
            spec: TableSpec = getattr(self, table)
            for i, attr in enumerate(spec.attributes):
                if attr.name in names:
                    raise _FieldError(
                        (table, "attributes", i, "name"),
                        f"{attr.name!r} is already an attribute of {names[attr.name]}; "
                        "names are unique across users and items",
                    )
                names[attr.name] = table
        declared = self.event_types
        for i, name in enumerate(self.seen or ()):
            if name not in declared:
                known = ", ".join(declared) if declared else "none: events.event_type is absent"
                raise _FieldError(("seen", i), f"{name!r} is not a declared event type ({known})")
        if self.seen is not None and not self.seen:
            raise _FieldError(("seen",), "name at least one type, or leave it out (all)")
        return self

    @property
    def event_types(self) -> tuple[str, ...]:
        """The declared event types, in the spec's order (empty without an event type)."""
        return tuple(self.events.event_type.weights) if self.events.event_type else ()

    @property
    def positive_types(self) -> tuple[str, ...]:
        """Event types that count as positives for evaluation (all but the negatives when
        not narrowed)."""
        event_type = self.events.event_type
        if event_type is None or event_type.positives is None:
            negatives = set(self.negative_types)
            return tuple(t for t in self.event_types if t not in negatives)
        return event_type.positives

    @property
    def negative_types(self) -> tuple[str, ...]:
        """Event types that say the user did not want the item (none when not declared)."""
        event_type = self.events.event_type
        return () if event_type is None else tuple(event_type.negatives or ())

    @property
    def seen_types(self) -> tuple[str, ...]:
        """Event types that make an item seen (all when not narrowed)."""
        return self.event_types if self.seen is None else self.seen

    def file_paths(self, spec_path: str | Path) -> dict[str, Path]:
        """The declared files, resolved against the folder of the spec file."""
        if self.files is None:
            return {}
        declared: dict[str, str] = self.files.model_dump(exclude_none=True)
        return {table: Path(spec_path).parent / rel for table, rel in declared.items()}


def _where(loc: Sequence[str | int]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "(top level)"


def _attribute_label(loc: Sequence[str | int], raw: Any) -> str:
    # An index into attributes is hard to read; name the attribute the user wrote.
    node = raw
    label = ""
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            break
        if isinstance(part, int) and isinstance(node, dict) and "name" in node:
            label = f" (attribute {node['name']!r})"
    return label


def _describe(error: Mapping[str, Any]) -> tuple[tuple[str | int, ...], str]:
    loc = tuple(error["loc"])
    kind = error["type"]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, _FieldError):
        return (*loc, *cause.loc), cause.message
    if kind == "value_error" and cause is not None:
        return loc, str(cause)
    if kind == "extra_forbidden":
        return loc, "unknown key (the spec refuses keys it does not define)"
    if kind == "missing":
        return loc, "required, missing"
    message = str(error["msg"])
    if kind == "literal_error":
        message = message.replace("Input should be", "allowed:")
        return loc, f"{error['input']!r} is not allowed; {message}"
    return loc, f"{message} (got {error['input']!r})"


def _spec_error(source: str, exc: ValidationError, raw: Any) -> DataError:
    lines = []
    for error in exc.errors():
        loc, message = _describe(error)
        lines.append(f"{source}: field '{_where(loc)}'{_attribute_label(loc, raw)}: {message}")
    return DataError("\n".join([*lines, HINT]))


def load_spec(path: str | Path) -> DatasetSpec:
    """Read and check one dataset spec.

    Args:
        path: The YAML file.

    Returns:
        The checked spec.

    Raises:
        DataError: The file is missing, is not YAML, or breaks the spec; the message names
            the file and each spec field at fault.
    """
    import yaml

    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{source}: cannot read the dataset spec: {exc}\n{HINT}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DataError(f"{source}: not valid YAML: {exc}\n{HINT}") from exc
    if not isinstance(raw, dict):
        raise DataError(f"{source}: a dataset spec is a mapping of fields\n{HINT}")
    try:
        return DatasetSpec.model_validate(raw)
    except ValidationError as exc:
        raise _spec_error(source, exc, raw) from exc


def spec_to_yaml(spec: DatasetSpec) -> str:
    """The spec as YAML (long forms, defaults kept); ``load_spec`` reads it back equal."""
    import yaml

    data = spec.model_dump(mode="json", exclude_none=True)
    return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
