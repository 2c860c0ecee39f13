"""The Great Expectations suites of the contract, generated from the dataset spec.

``build_suites`` declares, from a ``DatasetSpec``, the expectations of each table:

- interactions: the canonical columns and dtypes, no nulls, ``event_type`` in the
  declared set, ``weight`` within the explicit value's range (else above 0), events inside
  the data interval and not in the future, unique events, referential integrity with the
  users and items tables, and the row-count band;
- users and items: the key and attribute columns and their dtypes, a not-null unique key,
  and each attribute's constraints (not null, allowed set, range) with the severity the
  spec gives them; the allowed set of a multi-valued categorical is checked on every
  element of the split values, in a suite of its own over those elements.

Each expectation carries our check key and severity in its ``meta``. ``run_suites`` runs
them in one ephemeral GX context, turns every result into a ``Check`` in suite order, and
renders the run's Data Docs. The batches are pandas frames, or Spark DataFrames of the
same frames on the Spark engine (``RECOPS_ENGINE=spark``: GX's Spark datasource); the
checks are the same either way, and name the same dtypes.

Great Expectations is imported inside the functions: it alone takes seconds to import,
and Airflow's DAG parser imports this package.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recops_models.feature_defs import FeatureDef, split_values

from recops.layout import INTERACTION_COLUMNS, layout_from_spec
from recops.validation.checks import Check, summarise
from recops.validation.contract import ContractConfig
from recops.validation.schema import KEY_COLUMNS, table_columns, table_types
from recops.validation.tables import Table

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame as SparkFrame
    from pyspark.sql import SparkSession

    from recops.config import Settings
    from recops.dataset_spec import Attribute, DatasetSpec
    from recops.layout import Layout

__all__ = [
    "Suite",
    "allowed_values",
    "build_docs",
    "build_suites",
    "check_key",
    "ids",
    "is_reference",
    "reference_check",
    "run_suites",
    "spark_frame",
    "suite_frame",
    "to_check",
]

#: Interactions columns that identify one event: the same user, item, time and type twice
#: is a duplicate (a view and a purchase in the same second are two events).
EVENT_KEY: tuple[str, ...] = ("user_id", "item_id", "event_timestamp", "event_type")
#: The Spark type GX's Spark datasource checks for each published dtype name
#: (``recops.validation.schema``): a tz-aware timestamp is ``TimestampType``, a naive one
#: ``TimestampNTZType`` and fails, as it fails the pandas check.
SPARK_TYPES: dict[str, str] = {
    "int64": "LongType",
    "float64": "DoubleType",
    "str": "StringType",
    "Timestamp": "TimestampType",
}


@dataclass(frozen=True)
class Suite:
    """One GX suite: the expectations run on one frame, reported under one table.

    Attributes:
        name: The suite's (and its data asset's) name in the GX context.
        table: The table its checks are reported under.
        expectations: The GX expectations, with our check key and severity in ``meta``.
        elements_of: A multi-valued categorical: the suite runs on the split values of
            this column (one row per element), not on the table itself.
    """

    name: str
    table: str
    expectations: list[Any]
    elements_of: FeatureDef | None = None


def allowed_values(attribute: Attribute) -> list[str]:
    """The allowed set of a categorical attribute as the published strings, sorted.

    Categorical columns are published as strings, so a number in the spec's set is
    compared as its text (``1`` and ``1.0`` as ``"1"``).
    """
    if attribute.allowed is None:
        return []
    texts = {
        str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)
        for v in attribute.allowed.values
    }
    return sorted(texts)


def build_suites(
    spec: DatasetSpec,
    user_ids: list[int],
    item_ids: list[int],
    *,
    start: datetime,
    end: datetime,
    contract: ContractConfig,
    band: tuple[int, int, str] | None,
) -> list[Suite]:
    """The suites of the dataset ``spec`` declares, with check keys and severities.

    Args:
        spec: The dataset spec: attributes, their constraints, event types, value range.
        user_ids: Allowed ``user_id`` values of the interactions (the users table's ids).
        item_ids: Allowed ``item_id`` values of the interactions (the items table's ids).
        start: Start of the data interval (UTC, inclusive).
        end: End of the data interval (UTC, exclusive).
        contract: ``allow_empty`` and ``warn_only`` are applied here.
        band: ``(low, high, severity)`` of the row-count band, or None without history.

    Returns:
        The interactions suite, then per dimension table its suite and one suite per
        multi-valued categorical with an allowed set.
    """
    import great_expectations as gx

    # GX's stubs do not export the expectation classes; the module is used as Any.
    E: Any = gx.expectations
    layout = layout_from_spec(spec)
    suites = [
        Suite(
            "interactions",
            "interactions",
            _interactions(E, layout, user_ids, item_ids, start, end, contract, band),
        )
    ]
    columns, types = table_columns(layout), table_types(layout)
    for table, table_spec in (("users", spec.users), ("items", spec.items)):
        key = KEY_COLUMNS[table]
        # Dimension tables may grow columns; they must hold at least the declared ones.
        expectations: list[Any] = [
            E.ExpectTableColumnsToMatchSet(column_set=list(columns[table]), exact_match=False),
            *(E.ExpectColumnValuesToBeOfType(column=c, type_=t) for c, t in types[table].items()),
            E.ExpectColumnValuesToNotBeNull(column=key),
            E.ExpectColumnValuesToBeUnique(column=key),
            # Feast reads the valid-from time of every row.
            E.ExpectColumnValuesToNotBeNull(column="event_timestamp"),
        ]
        element_suites: list[Suite] = []
        for attribute in table_spec.attributes:
            expectations += _attribute(E, attribute)
            if attribute.kind == "multi_categorical" and attribute.allowed is not None:
                in_set = E.ExpectColumnValuesToBeInSet(
                    column=attribute.name,
                    value_set=allowed_values(attribute),
                    meta={"severity": attribute.allowed.severity},
                )
                element_suites.append(
                    Suite(
                        f"{table}__{attribute.name}__values",
                        table,
                        [in_set],
                        FeatureDef(attribute.name, attribute.kind, attribute.separator),
                    )
                )
        suites += [Suite(table, table, expectations), *element_suites]
    for suite in suites:
        for expectation in suite.expectations:
            meta = dict(expectation.meta or {})
            key = meta.get("check") or check_key(suite.table, expectation)
            severity = meta.get("severity", "fail")
            if key in contract.warn_only:
                severity = "warn"
            expectation.meta = {"check": key, "severity": severity}
            # GX's own severity mirrors ours, so its Data Docs show warnings as warnings.
            expectation.severity = "warning" if severity == "warn" else "critical"
    return suites


def _interactions(
    E: Any,
    layout: Layout,
    user_ids: list[int],
    item_ids: list[int],
    start: datetime,
    end: datetime,
    contract: ContractConfig,
    band: tuple[int, int, str] | None,
) -> list[Any]:
    now = datetime.now(UTC).replace(microsecond=0)
    types = table_types(layout)["interactions"]
    if layout.value_range is not None:
        low, high = layout.value_range
        weight = E.ExpectColumnValuesToBeBetween(column="weight", min_value=low, max_value=high)
    else:
        # Without an explicit value the weight is the event type's, which the spec keeps > 0.
        weight = E.ExpectColumnValuesToBeBetween(column="weight", min_value=0, strict_min=True)
    expectations: list[Any] = [
        E.ExpectTableRowCountToBeBetween(min_value=0 if contract.allow_empty else 1),
        E.ExpectTableColumnsToMatchSet(column_set=list(INTERACTION_COLUMNS), exact_match=True),
        *(E.ExpectColumnValuesToBeOfType(column=c, type_=t) for c, t in types.items()),
        *(E.ExpectColumnValuesToNotBeNull(column=c) for c in INTERACTION_COLUMNS),
        E.ExpectColumnValuesToBeInSet(column="event_type", value_set=sorted(layout.event_types)),
        weight,
        # Half-open interval: an event at interval_end belongs to the next partition.
        E.ExpectColumnValuesToBeBetween(
            column="event_timestamp", min_value=start, max_value=end, strict_max=True
        ),
        # Separate from the interval so a clock-skewed producer is named as such.
        E.ExpectColumnValuesToBeBetween(
            column="event_timestamp",
            max_value=now,
            meta={"check": "interactions.no_future_events"},
        ),
        E.ExpectCompoundColumnsToBeUnique(column_list=list(EVENT_KEY)),
        # A user may have events and no profile row yet (a new key from POST /v1/events,
        # a users file exported before the sign-up): warned by default, never an error in
        # the models. An item outside the catalogue cannot be served: it blocks.
        E.ExpectColumnValuesToBeInSet(
            column="user_id",
            value_set=user_ids,
            meta={"severity": contract.unknown_user_severity},
        ),
        E.ExpectColumnValuesToBeInSet(column="item_id", value_set=item_ids),
    ]
    if band is not None:
        low_rows, high_rows, severity = band
        expectations.append(
            E.ExpectTableRowCountToBeBetween(
                min_value=low_rows,
                max_value=high_rows,
                meta={"check": "interactions.row_count_band", "severity": severity},
            )
        )
    return expectations


def _attribute(E: Any, attribute: Attribute) -> list[Any]:
    """The expectations of one attribute's constraints, each with the spec's severity."""
    name = attribute.name
    expectations: list[Any] = []
    if attribute.not_null is not None:
        expectations.append(
            E.ExpectColumnValuesToNotBeNull(
                column=name, meta={"severity": attribute.not_null.severity}
            )
        )
    if attribute.allowed is not None and attribute.kind == "categorical":
        # A multi-valued categorical's set is checked per element, in its own suite.
        expectations.append(
            E.ExpectColumnValuesToBeInSet(
                column=name,
                value_set=allowed_values(attribute),
                meta={"severity": attribute.allowed.severity},
            )
        )
    if attribute.range is not None:
        # NaN (a missing number) is not out of range: ``not_null`` says whether it may be.
        expectations.append(
            E.ExpectColumnValuesToBeBetween(
                column=name,
                min_value=attribute.range.low,
                max_value=attribute.range.high,
                meta={"severity": attribute.range.severity},
            )
        )
    return expectations


def check_key(table: str, expectation: Any) -> str:
    """``table.expectation_type[.column]``: the key ``warn_only`` names a check by."""
    column = getattr(expectation, "column", None)
    key = f"{table}.{expectation.expectation_type}"
    return f"{key}.{column}" if column else key


def run_suites(
    tables: dict[str, Table],
    *,
    spec: DatasetSpec,
    start: datetime,
    end: datetime,
    contract: ContractConfig,
    band: tuple[int, int, str] | None,
    docs_dir: Path | None,
    settings: Settings | None = None,
) -> tuple[list[Check], str]:
    """Run every suite of ``spec`` in one ephemeral GX context.

    Args:
        tables: The tables under validation, by name.
        spec: The dataset spec the suites are built from.
        start: Start of the data interval (UTC, inclusive).
        end: End of the data interval (UTC, exclusive).
        contract: ``allow_empty`` and ``warn_only``.
        band: The row-count band, or None without history.
        docs_dir: Where to render the Data Docs; None for none.
        settings: Picks the engine: on ``spark`` the batches are Spark DataFrames on GX's
            Spark datasource, otherwise pandas frames. Read from the environment when
            omitted.

    Returns:
        The checks in suite order, and the Data Docs index (``""`` when ``docs_dir`` is
        None).
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    context = gx.get_context(
        mode="ephemeral",
        project_config=DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
            analytics_enabled=False,
            # Progress bars would flood Airflow task logs.
            progress_bars=ProgressBarsConfig(globally=False),
        ),
    )
    if settings is None:
        from recops.config import Settings

        settings = Settings.from_env()
    spark = None
    if settings.engine == "spark":
        from recops.spark import spark_session

        spark = spark_session(settings)
        datasource: Any = context.data_sources.add_spark(name="recops")
    else:
        datasource = context.data_sources.add_pandas(name="recops")
    suites = build_suites(
        spec,
        ids(tables["users"].frame, "user_id"),
        ids(tables["items"].frame, "item_id"),
        start=start,
        end=end,
        contract=contract,
        band=band,
    )
    checks: list[Check] = []
    for entry in suites:
        # Spark names its types its own way; the checks keep the published names.
        published = _spark_types(entry) if spark is not None else {}
        name = entry.name
        batch_definition = datasource.add_dataframe_asset(
            name=name
        ).add_batch_definition_whole_dataframe(name=f"{name}_whole")
        positions = [
            i for i, e in enumerate(entry.expectations) if not is_reference(entry.table, e)
        ]
        suite = context.suites.add(
            gx.ExpectationSuite(
                name=f"{name}_suite", expectations=[entry.expectations[i] for i in positions]
            )
        )
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{name}_validation", data=batch_definition, suite=suite)
        )
        table_frame = suite_frame(entry, tables[entry.table].frame)
        frame: Any = spark_frame(spark, table_frame) if spark is not None else table_frame
        result = definition.run(batch_parameters={"dataframe": frame})
        # GX groups results by metric, not suite order; restore suite order for readable reports.
        order = {e.id: positions[i] for i, e in enumerate(suite.expectations)}
        placed: list[tuple[int, Check]] = []
        for r in result.results:
            check = to_check(entry.table, r.to_json_dict())
            if check.kwargs.get("type_") in published:
                kwargs = {**check.kwargs, "type_": published[check.kwargs["type_"]]}
                check = dataclasses.replace(check, kwargs=kwargs)
            placed.append((order.get(getattr(r.expectation_config, "id", None), len(order)), check))
        placed += [
            (i, reference_check(entry.table, e, table_frame))
            for i, e in enumerate(entry.expectations)
            if is_reference(entry.table, e)
        ]
        checks += [check for _, check in sorted(placed, key=lambda p: p[0])]
    return checks, (build_docs(context, docs_dir) if docs_dir is not None else "")


def is_reference(table: str, expectation: Any) -> bool:
    """True for the interactions' checks that every user / item id is a known one.

    ``run_suites`` evaluates these with pandas, not GX: GX re-validates an expectation's
    whole ``value_set`` each time it reads the configuration, which took 25 s for 2M events
    against 100k users and 50k items (the membership itself: a tenth of a second).
    """
    return (
        table == "interactions"
        and expectation.expectation_type == "expect_column_values_to_be_in_set"
        and getattr(expectation, "column", None) in ("user_id", "item_id")
    )


def reference_check(table: str, expectation: Any, frame: pd.DataFrame) -> Check:
    """``expectation`` (an ``is_reference`` one) evaluated on ``frame`` as GX would: empty
    cells are not checked, and up to 20 unexpected values are listed."""
    column = str(expectation.column)
    known = list(expectation.value_set)
    meta = expectation.meta or {}
    base: dict[str, Any] = {
        "table": table,
        "expectation_type": expectation.expectation_type,
        "kwargs": {"column": column, "value_set": summarise(known)},
        "check": str(meta.get("check", "")),
        "severity": str(meta.get("severity", "fail")),
    }
    if column not in frame.columns:
        return Check(**base, success=False, error=f'The column "{column}" does not exist.')
    values = frame[column].dropna()
    unexpected = values[~values.isin(known)]
    return Check(
        **base,
        success=bool(unexpected.empty),
        unexpected_count=len(unexpected),
        unexpected_sample=unexpected.head(20).tolist(),
    )


def _spark_types(suite: Suite) -> dict[str, str]:
    """Point ``suite``'s type checks at Spark's type names; returns Spark name -> ours."""
    published: dict[str, str] = {}
    for expectation in suite.expectations:
        ours = getattr(expectation, "type_", None)
        if expectation.expectation_type == "expect_column_values_to_be_of_type" and (
            ours in SPARK_TYPES
        ):
            expectation.type_ = SPARK_TYPES[ours]
            published[SPARK_TYPES[ours]] = ours
    return published


def spark_frame(spark: SparkSession, frame: pd.DataFrame) -> SparkFrame:
    """``frame`` as a Spark DataFrame with the same columns, types and missing values.

    Converted through Arrow, so a NaN in a float column becomes a null, as GX's pandas
    checks count it, and a tz-aware timestamp stays a ``TimestampType``. A column Arrow
    cannot type (an object column mixing strings and numbers) is passed as its values'
    text, so the suites still run and its type check fails.
    """
    import pyarrow as pa

    columns = {}
    for name in frame.columns:
        try:
            columns[name] = pa.Array.from_pandas(frame[name])
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            text = frame[name].map(lambda v: None if v is None else repr(v))
            columns[name] = pa.Array.from_pandas(text, type=pa.string())
    table = pa.table(columns) if columns else pa.table({})
    if table.num_columns == 0:
        return spark.range(len(frame)).drop("id")
    return spark.createDataFrame(table)


def suite_frame(suite: Suite, frame: pd.DataFrame) -> pd.DataFrame:
    """The frame ``suite`` runs on: the table, or one row per distinct element of a split column."""
    feature = suite.elements_of
    if feature is None:
        return frame
    import pandas as pd

    if feature.name not in frame.columns:
        # The table's own suite reports the missing column; nothing to split here.
        return pd.DataFrame({feature.name: pd.Series([], dtype=object)})
    cells = frame[feature.name]
    # Split each distinct cell once: a catalogue repeats the same few combinations.
    distinct = cells[cells.notna()].unique()
    elements = [
        value for values in split_values(distinct, feature.separator or "") for value in values
    ]
    return pd.DataFrame({feature.name: pd.Series(sorted(set(elements)), dtype=object)})


def build_docs(context: Any, docs_dir: Path) -> str:
    """Render GX Data Docs for this run's validation results into ``docs_dir``."""
    # Results live in the ephemeral context's in-memory store, so the site holds this run
    # only; old pages from an earlier attempt are removed first.
    shutil.rmtree(docs_dir, ignore_errors=True)
    docs_dir.parent.mkdir(parents=True, exist_ok=True)
    context.add_data_docs_site(
        site_name="recops",
        site_config={
            "class_name": "SiteBuilder",
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs_dir),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    context.build_data_docs(site_names=["recops"])
    from recops.validation.docs_page import self_contained_docs

    # The site needs its folder and a browser with network; MLflow's viewer needs one file.
    self_contained_docs(docs_dir)
    return str(docs_dir / "index.html")


def to_check(table: str, raw: dict[str, Any]) -> Check:
    """Flatten one GX expectation result (its JSON dict) into a ``Check``."""
    config = raw.get("expectation_config") or {}
    kwargs = {k: summarise(v) for k, v in (config.get("kwargs") or {}).items() if k != "batch_id"}
    meta = config.get("meta") or {}
    result = raw.get("result") or {}
    error = _exception_message(raw.get("exception_info") or {})
    return Check(
        table=table,
        expectation_type=str(config.get("type", "unknown")),
        kwargs=kwargs,
        success=bool(raw.get("success")),
        observed_value=result.get("observed_value"),
        unexpected_count=result.get("unexpected_count"),
        unexpected_sample=result.get("partial_unexpected_list"),
        details=result.get("details"),
        error=error,
        check=str(meta.get("check", "")),
        severity=str(meta.get("severity", "fail")),
    )


def _exception_message(info: dict[str, Any]) -> str | None:
    # GX reports either one {raised_exception, exception_message} record or, when a metric
    # failed to resolve, a dict of such records keyed by metric id.
    records = [info] if "raised_exception" in info else list(info.values())
    messages = [
        str(r.get("exception_message"))
        for r in records
        if isinstance(r, dict) and r.get("raised_exception")
    ]
    return "; ".join(dict.fromkeys(messages)) or None


def ids(frame: pd.DataFrame, column: str) -> list[int]:
    """The distinct numeric values of ``column``, sorted (empty when the column is absent)."""
    if column not in frame.columns:
        return []
    import pandas as pd

    values = pd.to_numeric(frame[column], errors="coerce").dropna().unique()
    # Plain ints: GX serialises value_set into the expectation config.
    return sorted(int(v) for v in values)
