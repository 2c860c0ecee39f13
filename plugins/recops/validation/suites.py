"""The Great Expectations suites of the contract, one per table, and running them.

``build_suites`` declares the expectations (schema and dtypes, null keys, value ranges,
allowed categoricals, unique events, referential integrity, events inside the data
interval, the row-count band) with our check key and severity in each one's ``meta``.
``run_suites`` runs them in one ephemeral GX context, turns every result into a
``Check`` in suite order, and renders the run's Data Docs.

Great Expectations is imported inside the functions: it alone takes seconds to import,
and Airflow's DAG parser imports this package.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recops.validation.checks import Check, summarise
from recops.validation.contract import ContractConfig
from recops.validation.schema import (
    GENDERS,
    INTERACTION_COLUMNS,
    INTERACTION_TYPES,
    ITEM_COLUMNS,
    ML100K_OCCUPATIONS,
    N_GENRES,
    RELEASE_YEARS,
    USER_COLUMNS,
)
from recops.validation.tables import Table

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["build_docs", "build_suites", "check_key", "ids", "run_suites", "to_check"]


def build_suites(
    user_ids: list[int],
    item_ids: list[int],
    *,
    start: datetime,
    end: datetime,
    contract: ContractConfig,
    band: tuple[int, int, str] | None,
) -> dict[str, list[Any]]:
    """The expectations of each table, keyed by table name, with check keys and severities.

    Args:
        user_ids: Allowed ``user_id`` values of the interactions (the users table's ids).
        item_ids: Allowed ``item_id`` values of the interactions (the items table's ids).
        start: Start of the data interval (UTC, inclusive).
        end: End of the data interval (UTC, exclusive).
        contract: ``allow_empty`` and ``warn_only`` are applied here.
        band: ``(low, high, severity)`` of the row-count band, or None without history.
    """
    import great_expectations as gx

    # GX's stubs do not export the expectation classes; the module is used as Any.
    E: Any = gx.expectations
    now = datetime.now(UTC).replace(microsecond=0)
    interactions: list[Any] = [
        E.ExpectTableRowCountToBeBetween(min_value=0 if contract.allow_empty else 1),
        E.ExpectTableColumnsToMatchSet(column_set=list(INTERACTION_COLUMNS), exact_match=True),
        *(E.ExpectColumnValuesToBeOfType(column=c, type_=t) for c, t in INTERACTION_TYPES.items()),
        *(E.ExpectColumnValuesToNotBeNull(column=c) for c in INTERACTION_COLUMNS),
        E.ExpectColumnValuesToBeBetween(column="rating", min_value=1, max_value=5),
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
        E.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "item_id", "event_timestamp"]),
        E.ExpectColumnValuesToBeInSet(column="user_id", value_set=user_ids),
        E.ExpectColumnValuesToBeInSet(column="item_id", value_set=item_ids),
    ]
    if band is not None:
        low, high, severity = band
        interactions.append(
            E.ExpectTableRowCountToBeBetween(
                min_value=low,
                max_value=high,
                meta={"check": "interactions.row_count_band", "severity": severity},
            )
        )
    # Dimension tables may grow columns; they must hold at least the ones we join on.
    users: list[Any] = [
        E.ExpectTableColumnsToMatchSet(column_set=list(USER_COLUMNS), exact_match=False),
        E.ExpectColumnValuesToNotBeNull(column="user_id"),
        E.ExpectColumnValuesToBeUnique(column="user_id"),
        # Served models take age/gender/occupation as inputs, so nulls would break serving.
        *(E.ExpectColumnValuesToNotBeNull(column=c) for c in ("age", "gender", "occupation")),
        E.ExpectColumnValuesToBeBetween(column="age", min_value=1, max_value=120),
        E.ExpectColumnValuesToBeInSet(column="gender", value_set=sorted(GENDERS)),
        E.ExpectColumnValuesToBeInSet(column="occupation", value_set=sorted(ML100K_OCCUPATIONS)),
    ]
    items: list[Any] = [
        E.ExpectTableColumnsToMatchSet(column_set=list(ITEM_COLUMNS), exact_match=False),
        E.ExpectColumnValuesToNotBeNull(column="item_id"),
        E.ExpectColumnValuesToBeUnique(column="item_id"),
        *(E.ExpectColumnValuesToNotBeNull(column=c) for c in ("release_year", "genre_mask")),
        E.ExpectColumnValuesToBeInSet(column="release_year", value_set=sorted(RELEASE_YEARS)),
        E.ExpectColumnValuesToBeBetween(
            column="genre_mask", min_value=0, max_value=2**N_GENRES - 1
        ),
    ]
    suites = {"interactions": interactions, "users": users, "items": items}
    for table, expectations in suites.items():
        for expectation in expectations:
            meta = dict(expectation.meta or {})
            key = meta.get("check") or check_key(table, expectation)
            severity = meta.get("severity", "fail")
            if key in contract.warn_only:
                severity = "warn"
            expectation.meta = {"check": key, "severity": severity}
            # GX's own severity mirrors ours, so its Data Docs show warnings as warnings.
            expectation.severity = "warning" if severity == "warn" else "critical"
    return suites


def check_key(table: str, expectation: Any) -> str:
    """``table.expectation_type[.column]``: the key ``warn_only`` names a check by."""
    column = getattr(expectation, "column", None)
    key = f"{table}.{expectation.expectation_type}"
    return f"{key}.{column}" if column else key


def run_suites(
    tables: dict[str, Table],
    *,
    start: datetime,
    end: datetime,
    contract: ContractConfig,
    band: tuple[int, int, str] | None,
    docs_dir: Path | None,
) -> tuple[list[Check], str]:
    """Run every table's suite in one ephemeral GX context.

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
    datasource = context.data_sources.add_pandas(name="recops")
    suites = build_suites(
        ids(tables["users"].frame, "user_id"),
        ids(tables["items"].frame, "item_id"),
        start=start,
        end=end,
        contract=contract,
        band=band,
    )
    checks: list[Check] = []
    for name, expectations in suites.items():
        batch_definition = datasource.add_dataframe_asset(
            name=name
        ).add_batch_definition_whole_dataframe(name=f"{name}_whole")
        suite = context.suites.add(
            gx.ExpectationSuite(name=f"{name}_suite", expectations=expectations)
        )
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{name}_validation", data=batch_definition, suite=suite)
        )
        result = definition.run(batch_parameters={"dataframe": tables[name].frame})
        # GX groups results by metric, not suite order; restore suite order for readable reports.
        order = {e.id: i for i, e in enumerate(suite.expectations)}
        ordered = sorted(
            result.results,
            key=lambda r: order.get(getattr(r.expectation_config, "id", None), len(order)),
        )
        checks.extend(to_check(name, r.to_json_dict()) for r in ordered)
    return checks, (build_docs(context, docs_dir) if docs_dir is not None else "")


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
