"""The audit ledger of alias changes, and the lock that serializes promotions.

MLflow keeps only the current alias mapping (mlflow#2169 asks for a history), and setting
an alias is last-write-wins with no compare-and-set. Every alias change recops makes goes
through :func:`set_alias`, which takes the model's promotion lock, moves the alias and
appends who, what and why to a ``recops_alias_ledger`` table. The table lives in the
MLflow backend database when that is a SQL database (the embedded SQLite file, or the
scale profile's Postgres), so the registry and its history are backed up together;
``RECOPS_LEDGER_URL`` overrides it.
"""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recops.config import Settings
from recops.io import locked
from recops.records import Record
from recops.version_snapshot import refresh_quietly

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from sqlalchemy.engine import Engine

TABLE = "recops_alias_ledger"
_SQL_SCHEMES = ("sqlite:", "postgresql", "mysql")


@dataclass(frozen=True, kw_only=True)
class LedgerEntry(Record):
    """One alias change."""

    id: int
    at: str
    model: str
    alias: str
    from_version: int | None
    to_version: int | None
    actor: str
    reason: str
    source: str


def ledger_url(settings: Settings) -> str:
    """SQLAlchemy URL of the ledger: ``RECOPS_LEDGER_URL``, else MLflow's own database."""
    explicit = os.environ.get("RECOPS_LEDGER_URL", "").strip()
    if explicit:
        return explicit
    uri = settings.mlflow_tracking_uri
    if uri.startswith(_SQL_SCHEMES):
        return uri
    return f"sqlite:///{settings.home / 'ledger.db'}"


_ENGINES: dict[str, Engine] = {}


def _engine(settings: Settings) -> Engine:
    import sqlalchemy as sa

    url = ledger_url(settings)
    engine = _ENGINES.get(url)
    if engine is None:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, future=True)
        _ENGINES[url] = engine
    return engine


def _table() -> Any:
    import sqlalchemy as sa

    meta = sa.MetaData()
    return sa.Table(
        TABLE,
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.String(40), nullable=False),
        sa.Column("model", sa.String(256), nullable=False, index=True),
        sa.Column("alias", sa.String(256), nullable=False),
        sa.Column("from_version", sa.Integer, nullable=True),
        sa.Column("to_version", sa.Integer, nullable=True),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
    )


def default_actor() -> str:
    """Who is acting: ``RECOPS_ACTOR`` (set by the DAGs to the run id), else user@host."""
    explicit = os.environ.get("RECOPS_ACTOR", "").strip()
    if explicit:
        return explicit
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def record(
    settings: Settings,
    *,
    model: str,
    alias: str,
    from_version: int | None,
    to_version: int | None,
    reason: str,
    actor: str | None = None,
    source: str = "recops",
) -> LedgerEntry:
    """Append one alias change to the ledger.

    Args:
        settings: Deployment settings (where the ledger lives).
        model: Registered model name.
        alias: The alias that moved.
        from_version: Version it pointed at before (None: unset).
        to_version: Version it points at now (None: deleted).
        reason: Why, in words a reviewer can act on.
        actor: Who; defaults to :func:`default_actor`.
        source: Which path made the change (``nightly``, ``promote``, ``rollback``,
            ``registry-watch``, ``cli``...).

    Returns:
        The stored entry.
    """
    table = _table()
    engine = _engine(settings)
    table.metadata.create_all(engine, checkfirst=True)
    row: dict[str, Any] = {
        "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "model": model,
        "alias": alias,
        "from_version": from_version,
        "to_version": to_version,
        "actor": actor or default_actor(),
        "reason": reason,
        "source": source,
    }
    with engine.begin() as conn:
        result = conn.execute(table.insert().values(**row))
        key = result.inserted_primary_key
    return LedgerEntry(id=int(key[0]) if key else 0, **row)


def history(settings: Settings, model: str, *, limit: int = 50) -> list[LedgerEntry]:
    """The newest ``limit`` alias changes of ``model``, newest first."""
    import sqlalchemy as sa

    table = _table()
    engine = _engine(settings)
    table.metadata.create_all(engine, checkfirst=True)
    query = sa.select(table).where(table.c.model == model).order_by(table.c.id.desc()).limit(limit)
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    return [LedgerEntry(**dict(r)) for r in rows]


@contextmanager
def promotion_lock(settings: Settings, model: str) -> Iterator[None]:
    """Hold the model's promotion lock (an exclusive ``flock`` under RECOPS_HOME).

    Promotions and registrations of one model run one at a time: MLflow aliases have no
    compare-and-set, and SQLite-backed registries lose concurrent version creations. The
    DAGs add a 1-slot pool on top; this lock also covers the CLI and direct callers. With
    the scale profile's shared RECOPS_HOME volume the same file serializes every worker.
    """
    with locked(settings.home / "locks" / f"promote-{model}.lock"):
        yield


def current_alias(client: MlflowClient, model: str, alias: str) -> int | None:
    """Version ``alias`` points at, or None when unset (or the model does not exist)."""
    from mlflow.exceptions import MlflowException

    try:
        return int(client.get_model_version_by_alias(model, alias).version)
    except MlflowException:
        return None


def set_alias(
    client: MlflowClient,
    settings: Settings,
    *,
    model: str,
    alias: str,
    version: int,
    reason: str,
    actor: str | None = None,
    source: str = "recops",
) -> LedgerEntry | None:
    """Point ``alias`` at ``version`` and record it; a no-op move records nothing.

    The caller holds :func:`promotion_lock` when the move must be atomic with other
    registry reads (the promotion paths do).

    Returns:
        The ledger entry, or None when the alias already pointed there.
    """
    before = current_alias(client, model, alias)
    if before == version:
        return None
    # Every alias move (registration, promotion, rollback, the CLI) passes here, so the
    # promote form's list of versions follows each one.
    with refresh_quietly(settings, client):
        client.set_registered_model_alias(model, alias, str(version))
        return record(
            settings,
            model=model,
            alias=alias,
            from_version=before,
            to_version=version,
            reason=reason,
            actor=actor,
            source=source,
        )
