"""The stack's backing services: the profile's Postgres databases and Redis.

Each profile gets its own databases (``<prefix>_airflow``, ``_mlflow``, ``_mlflow_auth``,
``_feast``) and Redis database numbers; this module creates, checks and drops them.
``psycopg2`` and ``redis`` are imported only when called.
"""

from __future__ import annotations

from typing import Any

from recops.errors import ScaleError
from recops.scale.config import DB_SUFFIXES, ScaleConfig

__all__ = ["check_redis", "drop_databases", "ensure_databases"]


def _pg_connect(config: ScaleConfig, dbname: str = "postgres") -> Any:
    import psycopg2

    try:
        return psycopg2.connect(
            host=config.pg_host, port=config.pg_port, user=config.pg_user,
            password=config.pg_password or None, dbname=dbname, connect_timeout=10,
        )  # fmt: skip
    except psycopg2.OperationalError as exc:
        raise ScaleError(
            f"cannot reach Postgres at {config.pg_host}:{config.pg_port} as {config.pg_user!r}: "
            f"{str(exc).strip()} (start it, or set RECOPS_SCALE_PG_HOST/PORT/USER/PASSWORD)"
        ) from exc


def ensure_databases(config: ScaleConfig) -> list[str]:
    """Create the profile's databases that do not exist yet; return all their names."""
    names = [config.database(s) for s in DB_SUFFIXES]
    con = _pg_connect(config)
    con.autocommit = True  # CREATE DATABASE cannot run inside a transaction
    try:
        with con.cursor() as cur:
            for name in names:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    # The name is validated in ScaleConfig.from_env (letters, digits, _).
                    cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        con.close()
    return names


def drop_databases(config: ScaleConfig) -> list[str]:
    """Drop the profile's databases and flush its Redis databases (``scale down --purge``)."""
    names = [config.database(s) for s in DB_SUFFIXES]
    con = _pg_connect(config)
    con.autocommit = True
    try:
        with con.cursor() as cur:
            for name in names:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        con.close()
    import redis

    for db in (config.broker_db, config.feast_db):
        redis.Redis(host=config.redis_host, port=config.redis_port, db=db).flushdb()
    return names


def check_redis(config: ScaleConfig) -> None:
    """Raise :class:`ScaleError` naming the address when Redis does not answer."""
    import redis

    try:
        redis.Redis(host=config.redis_host, port=config.redis_port, socket_timeout=5).ping()
    except redis.RedisError as exc:
        raise ScaleError(
            f"cannot reach Redis at {config.redis_host}:{config.redis_port}: {exc} "
            "(start it, or set RECOPS_SCALE_REDIS_HOST/PORT)"
        ) from exc
