# syntax=docker/dockerfile:1
# Airflow image for the scale-out profile: the official image plus the pinned
# recops dependencies and the recops package, installed editable so that the
# bind mounts in docker-compose.yaml (./plugins, ./models) are the live code.
# Build context is the repository root; compose/airflow.Dockerfile.dockerignore
# keeps the context to the few files copied below.
FROM apache/airflow:3.3.2-python3.11

# The state volume and the source tree live here. Created in the image and owned
# by airflow (uid 50000, gid 0) so that a fresh named volume inherits this owner
# on first mount: the pipeline can then write without a root-only init step.
# setgid + group write keeps files usable by any uid run with gid 0.
USER root
RUN install -d -o airflow -g root -m 2775 /opt/recops/state /opt/recops/src
USER airflow
WORKDIR /opt/recops/src

# Dependencies first, so that editing code does not re-install TensorFlow.
# requirements.lock is the lock we test against. It is installed WITHOUT the
# Airflow constraints file: those pin what Airflow itself was released with and
# would clash with our exact pins. Naming apache-airflow==${AIRFLOW_VERSION}
# (set by the base image) makes pip fail rather than silently move Airflow off
# the image's version, and `pip check` fails the build if the lock broke a
# provider that ships in the image (celery, postgres, fab, ...).
COPY --chown=airflow:root requirements.lock ./
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r requirements.lock \
 && pip check

# --no-deps: everything is already pinned above; this only registers the
# recops package (and its CLI) as an editable install of /opt/recops/src.
COPY --chown=airflow:root pyproject.toml README.md ./
COPY --chown=airflow:root plugins/ plugins/
COPY --chown=airflow:root models/ models/
RUN pip install --no-cache-dir --no-deps -e .

# The Spark engine's client (RECOPS_ENGINE=spark; docs/engines.md): every task is a
# Spark driver, so the image needs a Java 17 runtime beside the PySpark that the lock
# already installs. Off by default; `RECOPS_SPARK_CLIENT=1 docker compose --profile spark
# build` turns it on (docker-compose.yaml passes it as this build argument).
ARG SPARK_CLIENT=0
USER root
RUN if [ "$SPARK_CLIENT" = "1" ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
      && rm -rf /var/lib/apt/lists/*; \
    fi
USER airflow

# The GPU worker (docker-compose.gpu.yaml) builds with TF_CUDA=1: TensorFlow's CUDA
# libraries as pip wheels, matching the pinned TensorFlow. The CPU image stays lean.
ARG TF_CUDA=0
RUN if [ "$TF_CUDA" = "1" ]; then \
      pip install --no-cache-dir "tensorflow[and-cuda]==$(pip show tensorflow | sed -n 's/^Version: //p')"; \
    fi
