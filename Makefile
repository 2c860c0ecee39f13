# recops: two commands matter. `make demo` installs everything and runs the nightly DAG
# end to end on MovieLens-100K; `make test` runs the test suite. Both start from a fresh
# clone with Python 3.11 and pip.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
UV_VERSION := 0.13.9

export RECOPS_HOME ?= $(CURDIR)/.recops
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONUNBUFFERED := 1

.PHONY: install install-spark demo test test-all test-fast lint ui serve stop status bench compose-env scale-up scale-down clean

install: $(STAMP)

# The lock file pins every package; uv installs from it (pip alone also works: see README).
# Spark (pyspark, py4j and what pyspark.sql.connect needs) is pinned there too but optional: `make install` leaves it out.
SPARK_PACKAGES := pyspark py4j grpcio-status zstandard
SPARK_STAMP := $(VENV)/.installed-spark

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 needed, got {sys.version}"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "uv==$(UV_VERSION)"
	grep -v -E '^($(shell echo $(SPARK_PACKAGES) | tr ' ' '|'))==' requirements.lock > $(VENV)/requirements.core.txt
	$(BIN)/uv pip install -q --python $(BIN)/python -r $(VENV)/requirements.core.txt
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	@touch $@

# The Spark engine (RECOPS_ENGINE=spark): PySpark builds from a source archive once; uv
# caches the built wheel, so later installs take seconds. Java 17 must be on the PATH.
install-spark: $(SPARK_STAMP)

$(SPARK_STAMP): $(STAMP)
	grep -E '^($(shell echo $(SPARK_PACKAGES) | tr ' ' '|'))==' requirements.lock > $(VENV)/requirements.spark.txt
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -r $(VENV)/requirements.spark.txt
	@touch $@

# TF's C++ log level 3 (FATAL only) for the Airflow tasks: the CUDA/TF start-up lines are
# written straight to stderr, which Airflow logs as ERROR (recops.airflow_logging).
demo: install
	TF_CPP_MIN_LOG_LEVEL=3 $(BIN)/recops demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Two workers, one test file each at a time (module fixtures are set up once), the
# longest files first (tests/conftest.py; xdist's own reorder, by test count, is off).
# Most integration time is spent waiting on schedulers and subprocesses, which overlaps.
PYTEST_WORKERS ?= 2

test: lint install-spark
	$(BIN)/pytest -q -m "not extended" -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

# Everything, including the tests marked `extended` (about two minutes more).
test-all: lint install-spark
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

test-fast: install
	$(BIN)/pytest -q -m "not slow"

ui: install
	TF_CPP_MIN_LOG_LEVEL=3 $(BIN)/recops ui

serve: install
	$(BIN)/recops serve

stop: install
	$(BIN)/recops stop

status: install
	$(BIN)/recops status --json

# Benchmarks (not tests): each prints a table and writes JSON/markdown/PNG under
# benchmarks/results/. Every figure is a ratio taken side by side in one run.
bench: install
	$(BIN)/python -m benchmarks.quality --seeds 3
	$(BIN)/python -m benchmarks.datasets
	$(BIN)/python -m benchmarks.training
	$(BIN)/python -m benchmarks.compression
	$(BIN)/python -m benchmarks.serving
	$(BIN)/python -m benchmarks.features
	$(BIN)/python -m benchmarks.recommend
	$(BIN)/python -m benchmarks.pipeline
	nice -n 10 $(BIN)/python -m benchmarks.scale
	$(BIN)/python -m benchmarks.byod
	$(BIN)/python -m benchmarks.profiles --datasets ml100k

# The scale-out profile on this machine: Airflow with CeleryExecutor on the local
# Postgres and Redis, an MLflow server with basic auth, Feast's SQL registry and Redis
# online store. Its state lives under .recops/scale, its databases are recops_scale_*.
SCALE_HOME ?= $(CURDIR)/.recops/scale

scale-up: install
	RECOPS_SCALE_HOME=$(SCALE_HOME) $(BIN)/recops scale up

scale-down: install
	RECOPS_SCALE_HOME=$(SCALE_HOME) $(BIN)/recops scale down

# Writes .env with generated secrets for docker-compose (never overwrites one).
compose-env:
	bash compose/gen-env.sh .env

clean:
	-$(BIN)/recops stop
	rm -rf $(RECOPS_HOME)
