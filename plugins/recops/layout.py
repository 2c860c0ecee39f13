"""The published layout of any dataset, derived from its spec: what every stage reads.

Whatever the user's files look like, the import lands the same canonical tables, and the
stages read only these names (never a dataset's own column names):

- interactions (daily partitions): ``user_id`` and ``item_id`` (int64: an integer key as
  it is, a string key interned to a stable id by ``recops.data.keys``),
  ``event_timestamp`` (UTC), ``event_type`` (string; ``DEFAULT_EVENT_TYPE`` when the spec
  declares none) and ``weight`` (float64: the explicit value when the spec has one, else
  the event type's weight);
- users: ``user_id``, one column per user attribute (named by the attribute's ``name``),
  ``event_timestamp`` (valid from);
- items: ``item_id``, one column per item attribute, ``event_timestamp``.

Attribute columns hold: categorical, multi-valued categorical (joined with the spec's
separator) and text as strings, missing as null; numeric as float64, missing NaN;
timestamp as float64 days since the epoch.

``Layout`` is that derivation; ``spec_path`` / ``active_spec`` / ``active_layout`` find
the spec of the dataset a deployment runs. This module is a leaf: light imports only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from recops_models.feature_defs import FeatureDef

from recops.errors import DataError

if TYPE_CHECKING:
    from recops.config import Settings
    from recops.dataset_spec import DatasetSpec, TableSpec

__all__ = [
    "DEFAULT_EVENT_TYPE",
    "INTERACTION_COLUMNS",
    "SHIPPED_SPECS",
    "SPEC_FILE",
    "Layout",
    "active_layout",
    "active_spec",
    "all_promotable_models",
    "known_datasets",
    "layout_from_spec",
    "shipped_datasets",
    "spec_path",
]

#: Columns of every interactions partition, in this order.
INTERACTION_COLUMNS: tuple[str, ...] = (
    "user_id",
    "item_id",
    "event_timestamp",
    "event_type",
    "weight",
)
#: The event type of every event of a dataset whose spec declares no event-type column.
DEFAULT_EVENT_TYPE = "interaction"
#: The spec a dataset was imported with, kept in its data folder.
SPEC_FILE = "spec.yaml"
#: The specs that ship with recops.
SHIPPED_SPECS = Path(__file__).resolve().parents[2] / "datasets"


@dataclass(frozen=True)
class Layout:
    """One dataset's published layout and event semantics.

    Attributes:
        name: The dataset name.
        user_key_type: ``string`` or ``integer``: the key type in the user's files.
        item_key_type: As ``user_key_type``, for items.
        user_features: User attributes, in spec order.
        item_features: Item attributes, in spec order.
        event_weights: Weight per event type (``{DEFAULT_EVENT_TYPE: 1.0}`` without types).
        positive_types: Event types that count as positives for evaluation.
        negative_types: Event types that say the user did not want the item: never a
            training positive nor a hit (the ranker's explicit negatives).
        seen_types: Event types that make an item seen (never recommended again).
        value_range: ``(low, high)`` of the explicit value, when the spec has one.
    """

    name: str
    user_key_type: str
    item_key_type: str
    user_features: tuple[FeatureDef, ...]
    item_features: tuple[FeatureDef, ...]
    event_weights: Mapping[str, float] = field(default_factory=dict)
    positive_types: tuple[str, ...] = ()
    negative_types: tuple[str, ...] = ()
    seen_types: tuple[str, ...] = ()
    value_range: tuple[float, float] | None = None

    @property
    def user_columns(self) -> tuple[str, ...]:
        """Columns of the published users table."""
        return ("user_id", *(f.name for f in self.user_features), "event_timestamp")

    @property
    def item_columns(self) -> tuple[str, ...]:
        """Columns of the published items table."""
        return ("item_id", *(f.name for f in self.item_features), "event_timestamp")

    @property
    def training_set_columns(self) -> tuple[str, ...]:
        """Columns of the training set: an interaction plus its user and item attributes."""
        return (
            *INTERACTION_COLUMNS,
            *(f.name for f in self.user_features),
            *(f.name for f in self.item_features),
        )

    @property
    def event_types(self) -> tuple[str, ...]:
        """The event types, in spec order."""
        return tuple(self.event_weights)

    def feature(self, name: str) -> FeatureDef:
        """The user or item feature called ``name``."""
        for f in (*self.user_features, *self.item_features):
            if f.name == name:
                return f
        raise KeyError(name)


def _features(table: TableSpec) -> tuple[FeatureDef, ...]:
    return tuple(FeatureDef(a.name, a.kind, a.separator) for a in table.attributes)


def layout_from_spec(spec: DatasetSpec) -> Layout:
    """Derive the published layout of the dataset ``spec`` declares."""
    event_type = spec.events.event_type
    weights = dict(event_type.weights) if event_type else {DEFAULT_EVENT_TYPE: 1.0}
    positives = spec.positive_types or (DEFAULT_EVENT_TYPE,)
    seen = spec.seen_types or (DEFAULT_EVENT_TYPE,)
    value = spec.events.value
    value_range = None
    if value is not None and value.range.low is not None and value.range.high is not None:
        value_range = (float(value.range.low), float(value.range.high))
    return Layout(
        name=spec.name,
        user_key_type=spec.users.key_type,
        item_key_type=spec.items.key_type,
        user_features=_features(spec.users),
        item_features=_features(spec.items),
        event_weights=weights,
        positive_types=tuple(positives),
        negative_types=spec.negative_types,
        seen_types=tuple(seen),
        value_range=value_range,
    )


def shipped_datasets() -> tuple[str, ...]:
    """Names of the specs under ``datasets/``."""
    return tuple(sorted(p.stem for p in SHIPPED_SPECS.glob("*.yaml")))


def known_datasets(settings: Settings) -> tuple[str, ...]:
    """The datasets a run may name: those imported under the home, and the deployment's.

    A shipped spec becomes a dataset once it is imported (``recops data import``, or the
    demo's ingest); until then a run on it would find no data.
    """
    imported = (p.parent.name for p in (settings.home / "data").glob(f"*/{SPEC_FILE}"))
    return tuple(sorted({*imported, settings.dataset}))


def all_promotable_models(settings: Settings) -> tuple[str, ...]:
    """Every known dataset's registered models, the deployment's own dataset first."""
    names = list(settings.promotable_models)
    for dataset in known_datasets(settings):
        names += [n for n in settings.for_dataset(dataset).promotable_models if n not in names]
    return tuple(names)


def spec_path(settings: Settings, dataset: str | None = None) -> Path:
    """The spec of ``dataset`` (default: the settings' dataset).

    The copy kept in the dataset's data folder at import wins; else the shipped spec.

    Raises:
        DataError: If neither exists (the message lists the datasets known).
    """
    name = dataset or settings.dataset
    imported = settings.dataset_data_dir(name) / SPEC_FILE
    if imported.is_file():
        return imported
    shipped = SHIPPED_SPECS / f"{name}.yaml"
    if shipped.is_file():
        return shipped
    known = ", ".join(shipped_datasets()) or "none"
    raise DataError(
        f"no dataset spec for {name!r}: neither {imported} nor {shipped} exists "
        f"(shipped: {known}); import it with `recops data import --spec FILE`"
    )


def active_spec(settings: Settings, dataset: str | None = None) -> DatasetSpec:
    """The spec of ``dataset`` (default: the settings' dataset), loaded and checked."""
    from recops.dataset_spec import load_spec

    return load_spec(spec_path(settings, dataset))


def _loaded(spec: DatasetSpec | str | Path) -> DatasetSpec:
    """``spec`` itself, or the spec its path holds."""
    if isinstance(spec, (str, Path)):
        from recops.dataset_spec import load_spec

        return load_spec(spec)
    return spec


def history_length_of(value: int | None, spec: DatasetSpec | str | Path) -> int:
    """A run's history length: its own ``value``, else its dataset spec's, else 0.

    What a run's ``history_length`` Param (None when the run leaves it empty) means for
    the dataset ``spec`` (loaded, or its path), by its ``training.history_length``.

    Raises:
        DataError: If the spec is needed and its file is missing or invalid (named).
    """
    if value is not None:
        return int(value)
    return int(_loaded(spec).training.history_length or 0)


def protocol_of(value: str | None, spec: DatasetSpec | str | Path) -> str:
    """A run's split protocol: its own ``value``, else its dataset spec's first protocol.

    What a run's ``protocol`` Param (None when the run leaves it empty) means for the
    dataset ``spec`` (loaded, or its path), by its ``evaluation.protocols``, whose first
    is the default.

    Raises:
        DataError: If the spec is needed and its file is missing or invalid (named).
    """
    if value is not None:
        return str(value)
    return str(_loaded(spec).evaluation.protocols[0])


def active_layout(settings: Settings, dataset: str | None = None) -> Layout:
    """The published layout of ``dataset`` (default: the settings' dataset)."""
    return layout_from_spec(active_spec(settings, dataset))
