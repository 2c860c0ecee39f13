-- Runs once, when the postgres container starts on an empty data volume
-- (/docker-entrypoint-initdb.d). Changing this file later has no effect on an
-- existing volume: drop the volume or create the database by hand.
--
-- One database per service, because each service runs its own schema
-- migrations (Airflow's, MLflow's Alembic chain, Feast's SQL registry) and
-- they must never share a migration history or collide on table names.
-- All three belong to the one role that POSTGRES_USER creates: a single
-- password to rotate, at the cost of no isolation between the services.
CREATE DATABASE airflow;
CREATE DATABASE mlflow;
CREATE DATABASE feast;
