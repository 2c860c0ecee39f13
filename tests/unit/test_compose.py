"""Static checks of the scale-out stack (docker-compose.yaml and its compose/ files).

No Docker engine runs here, so these tests read the files the way compose would and
check the properties a broken stack would otherwise show only at `docker compose up`:
references resolve, secrets have no defaults, images are pinned, every service can
report health, and the path TF Serving watches is the one the pipeline writes.
"""

from __future__ import annotations

import base64
import importlib.util
import re
import shutil
import stat
import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yaml"
GPU_COMPOSE = ROOT / "docker-compose.gpu.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
GEN_ENV = ROOT / "compose" / "gen-env.sh"
POSTGRES_INIT = ROOT / "compose" / "postgres-init.sql"

AIRFLOW_SERVICES = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
}
# `airflow <command>` each long-running Airflow service must run.
AIRFLOW_COMMANDS = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
    "airflow-worker": "celery worker --queues default,gpu",
}

# Compose interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err}.
# `$$` escapes a literal `$` for the container's shell, so `$${HOSTNAME}` is no reference.
_REF = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
_REQUIRED_REF = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]+\}")
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|KEY")
# scheme://user:password@host
_URL_CREDENTIALS = re.compile(r"://[^:/@\s]*:([^@\s]+)@")


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path.name}: top level is not a mapping"
    return data


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _load(COMPOSE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _env(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {key: "" if value is None else str(value) for key, value in raw.items()}


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):
        return dict.fromkeys(raw, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in raw.items()}


def _mounts(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) for each entry of `volumes`, short or long syntax."""
    mounts = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            mounts.append((entry.get("source", ""), entry["target"], bool(entry.get("read_only"))))
            continue
        parts = entry.split(":")
        if len(parts) == 1:  # anonymous volume
            mounts.append(("", parts[0], False))
        else:
            mode = parts[2] if len(parts) > 2 else "rw"
            mounts.append((parts[0], parts[1], "ro" in mode.split(",")))
    return mounts


def _is_named_volume(source: str) -> bool:
    return bool(source) and not source.startswith((".", "/", "~", "$"))


def _flags(service: dict[str, Any]) -> dict[str, str]:
    command = service.get("command") or []
    items = command.split() if isinstance(command, str) else command
    return dict(item[2:].split("=", 1) for item in items if item.startswith("--") and "=" in item)


def _documented_names() -> dict[str, str]:
    """Names .env.example documents, set or commented out, with their example value."""
    names = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.match(r"^#?\s*([A-Z_][A-Z0-9_]*)=(.*)$", line)
        if match:
            names.setdefault(match.group(1), match.group(2))
    return names


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in (*_strings(key), *_strings(value))]
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    return [node] if isinstance(node, str) else []


def _references(*paths: Path) -> list[tuple[str, str, str]]:
    """(name, operator, argument) of every interpolation in the given files.

    Read from the parsed YAML, as compose does: a `${VAR}` in a comment is no reference.
    """
    return [
        m.groups("")
        for path in paths
        for text in _strings(_load(path))
        for m in _REF.finditer(text)
    ]


def _required_names() -> set[str]:
    return {name for name, op, _ in _references(COMPOSE, GPU_COMPOSE) if op in {":?", "?"}}


def _is_long_running(service: dict[str, Any]) -> bool:
    return str(service.get("restart", "no")) != "no"


def _image_tag(image: str) -> str:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else ""


def test_depends_on_targets_are_defined_services(services: dict[str, dict[str, Any]]) -> None:
    conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    edges = 0
    for name, service in services.items():
        for target, condition in _depends_on(service).items():
            edges += 1
            assert target in services, f"{name} depends on undefined service {target!r}"
            assert target != name, f"{name} depends on itself"
            assert condition in conditions, f"{name} -> {target}: unknown condition {condition!r}"
            if condition == "service_healthy":
                assert "healthcheck" in services[target], (
                    f"{name} waits for {target} to be healthy, but {target} has no healthcheck"
                )
            if condition == "service_completed_successfully":
                assert not _is_long_running(services[target]), (
                    f"{name} waits for {target} to complete, but {target} restarts forever"
                )
    assert edges > 0, "no depends_on at all: start order would be left to chance"


def test_named_volumes_are_declared_and_bind_sources_exist(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, service in compose["services"].items():
        for source, target, _ in _mounts(service):
            assert target.startswith("/"), f"{name}: mount target {target!r} is not absolute"
            if _is_named_volume(source):
                used.add(source)
                assert source in declared, f"{name} mounts undeclared volume {source!r}"
            elif source.startswith("."):
                assert (ROOT / source).exists(), f"{name} bind-mounts missing path {source!r}"
    assert used == declared, f"declared but never mounted: {sorted(declared - used)}"


def test_every_variable_is_documented_in_env_example(services: dict[str, dict[str, Any]]) -> None:
    documented = _documented_names()
    referenced = {name for name, _, _ in _references(COMPOSE, GPU_COMPOSE)}
    assert referenced, "no ${VAR} in docker-compose.yaml: secrets cannot come from .env"
    missing = referenced - documented.keys()
    assert not missing, f".env.example does not document {sorted(missing)}"
    # What the app reads is documented too, even where compose sets it literally.
    app_vars = {
        key
        for key in _env(services["airflow-worker"])
        if key.startswith("RECOPS_") or key == "MLFLOW_TRACKING_URI"
    }
    assert {"RECOPS_HOME", "RECOPS_PROFILE", "RECOPS_SERVING_HOST"} <= app_vars
    assert not app_vars - documented.keys(), (
        f".env.example does not document {sorted(app_vars - documented.keys())}"
    )


def test_secrets_are_required_and_blank_in_env_example() -> None:
    lines = set(ENV_EXAMPLE.read_text().splitlines())
    required = _required_names()
    assert "POSTGRES_PASSWORD" in required
    for name in required:
        # Listed, uncommented and blank: a value here would be a default password.
        assert f"{name}=" in lines, f".env.example must list {name}= with no value"
    # A secret must never fall back to a default (${VAR:-...}).
    for name, op, argument in _references(COMPOSE, GPU_COMPOSE):
        if _SECRET_NAME.search(name):
            assert op in {":?", "?"}, f"${{{name}}} must be required (:?), not {op!r}{argument!r}"


def test_no_literal_secret_values(services: dict[str, dict[str, Any]]) -> None:
    checked = 0
    for name, service in services.items():
        for key, value in _env(service).items():
            if _SECRET_NAME.search(key):
                checked += 1
                assert _REQUIRED_REF.fullmatch(value), (
                    f"{name}: {key} must be a required ${{VAR:?...}} reference, got {value!r}"
                )
            for password in _URL_CREDENTIALS.findall(value):
                checked += 1
                assert _REQUIRED_REF.fullmatch(password), (
                    f"{name}: {key} embeds a literal password in a URL"
                )
    assert checked >= 10, f"only {checked} secret values found; the check is not biting"


def test_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    gpu = _load(GPU_COMPOSE)["services"]
    for name, service in [*services.items(), *(("gpu:" + n, s) for n, s in gpu.items())]:
        image = service.get("image", "")
        if not image and name.startswith("gpu:") and name[4:] in services:
            continue  # an override of a base service: the base's image applies
        assert image or "build" in service, f"{name} has neither image nor build"
        if "build" in service:
            continue  # named locally; what it is built FROM is checked below
        tag = _image_tag(image)
        assert tag and tag != "latest", f"{name}: image {image!r} is not pinned to a version"


def test_base_images_match_the_pinned_clients(services: dict[str, dict[str, Any]]) -> None:
    # The server images must speak the protocol of the client libraries we lock.
    dockerfile = (ROOT / "compose" / "airflow.Dockerfile").read_text()
    base = re.search(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE)
    assert base, "airflow.Dockerfile has no FROM"
    assert base.group(1) == f"apache/airflow:{version('apache-airflow')}-python3.11"
    assert _image_tag(services["mlflow"]["image"]).startswith(f"v{version('mlflow')}")
    serving_api = ".".join(version("tensorflow-serving-api").split(".")[:2])
    assert _image_tag(services["tfserving"]["image"]).startswith(serving_api + ".")


def test_long_running_services_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    long_running = {name for name, svc in services.items() if _is_long_running(svc)}
    assert long_running == set(services) - {"airflow-init"}, "only airflow-init may be one-shot"
    for name in long_running:
        check = services[name].get("healthcheck") or {}
        test = check.get("test")
        assert test and not check.get("disable"), f"{name} has no healthcheck"
        assert test[0] in {"CMD", "CMD-SHELL"} and len(test) > 1, f"{name}: bad test {test!r}"


def test_airflow_services_use_celery_postgres_and_redis(
    services: dict[str, dict[str, Any]],
) -> None:
    built_from_airflow = {
        name
        for name, svc in services.items()
        if (svc.get("build") or {}).get("dockerfile") == "compose/airflow.Dockerfile"
    }
    assert built_from_airflow == AIRFLOW_SERVICES
    pg_url = r"://recops:\$\{POSTGRES_PASSWORD:\?[^}]+\}@postgres:5432/airflow"
    for name in AIRFLOW_SERVICES:
        service = services[name]
        env = _env(service)
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert re.fullmatch(
            "postgresql\\+psycopg2" + pg_url, env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        ), name
        assert re.fullmatch("db\\+postgresql" + pg_url, env["AIRFLOW__CELERY__RESULT_BACKEND"]), (
            name
        )
        assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0", name
        assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false", name
        assert env["RECOPS_PROFILE"] == "scale", name
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000", name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith(
            "http://airflow-apiserver:8080/"
        ), name
        deps = _depends_on(service)
        assert deps.get("postgres") == "service_healthy", name
        assert deps.get("redis") == "service_healthy", name
        if name != "airflow-init":
            assert deps.get("airflow-init") == "service_completed_successfully", name
            command = service["command"]
            command = command if isinstance(command, str) else " ".join(command)
            assert command.removeprefix("airflow ") == AIRFLOW_COMMANDS[name], name
    init = " ".join(services["airflow-init"]["command"])
    assert "airflow db migrate" in init and "airflow users create" in init
    health = " ".join(services["airflow-apiserver"]["healthcheck"]["test"])
    assert "/api/v2/monitor/health" in health


def test_airflow_settings_name_real_options(services: dict[str, dict[str, Any]]) -> None:
    # A misspelt AIRFLOW__SECTION__KEY is silently ignored, and the default it leaves
    # (say, a random per-process JWT secret) only fails at run time.
    spec = importlib.util.find_spec("airflow")
    assert spec and spec.submodule_search_locations
    template = Path(spec.submodule_search_locations[0]) / "config_templates" / "config.yml"
    options = {
        section: set(body.get("options") or {})
        for section, body in yaml.safe_load(template.read_text()).items()
    }
    # Owned by the celery provider, which ships in the image but not in our venv.
    options.setdefault("celery", set()).update({"broker_url", "result_backend"})
    names = {key for svc in services.values() for key in _env(svc) if key.startswith("AIRFLOW__")}
    assert len(names) >= 10
    for name in names:
        section, option = name.lower().split("__")[1:3]
        assert option in options.get(section, set()), f"{name} is not an Airflow option"


def test_tfserving_watches_the_config_the_workers_write(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from recops.config import Settings

    tfserving, worker = services["tfserving"], services["airflow-worker"]
    flags = _flags(tfserving)
    config_path = flags["model_config_file"]

    def mount_of(service: dict[str, Any], path: str) -> tuple[str, str, bool]:
        hits = [m for m in _mounts(service) if path.startswith(m[1].rstrip("/") + "/")]
        assert hits, f"{path} is on no mount of {service.get('image') or service['build']}"
        return max(hits, key=lambda m: len(m[1]))

    serving_mount = mount_of(tfserving, config_path)
    worker_mount = mount_of(worker, config_path)
    assert _is_named_volume(serving_mount[0]), "models.config must live on a named volume"
    assert serving_mount[:2] == worker_mount[:2], (
        "tfserving and the workers must mount the same volume at the same path, "
        "so base_path in models.config means the same thing in both"
    )
    assert serving_mount[2] and not worker_mount[2], "serving reads (ro), workers write (rw)"

    # Derive the paths the way the pipeline does, from the workers' environment.
    for key, value in _env(worker).items():
        if key.startswith("RECOPS_"):
            # ``${VAR:-default}`` is the default when .env leaves VAR unset, as compose reads it.
            monkeypatch.setenv(key, re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value))
    settings = Settings.from_env()
    assert str(settings.models_config_path) == config_path
    assert str(settings.model_base_path).startswith(serving_mount[1])
    assert settings.serving_host == "tfserving"
    assert (settings.grpc_port, settings.rest_port) == (
        int(flags["port"]),
        int(flags["rest_api_port"]),
    )
    assert int(flags["model_config_file_poll_wait_seconds"]) > 0


def test_build_contexts_dockerfiles_and_copy_sources_exist(
    services: dict[str, dict[str, Any]],
) -> None:
    builds = {
        (svc["build"]["context"], svc["build"]["dockerfile"])
        for svc in services.values()
        if "build" in svc
    }
    assert builds, "nothing is built: the recops code would not be in the Airflow image"
    for context_name, dockerfile_name in builds:
        context = ROOT / context_name
        dockerfile = context / dockerfile_name
        assert context.is_dir(), f"build context {context_name!r} is missing"
        assert dockerfile.is_file(), f"Dockerfile {dockerfile_name!r} is missing"
        # BuildKit's per-Dockerfile ignore file: an allow-list of the context.
        ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
        allowed = {
            line[1:].rstrip("/") for line in ignore.read_text().splitlines() if line.startswith("!")
        }
        copies = [
            line.split()[1:-1]
            for line in dockerfile.read_text().splitlines()
            if line.startswith("COPY ") and "--from=" not in line
        ]
        sources = [s.rstrip("/") for args in copies for s in args if not s.startswith("--")]
        assert sources, f"{dockerfile_name} copies nothing"
        missing = [s for s in sources if not (context / s).exists()]
        assert not missing, f"{dockerfile_name} copies missing files {missing}"
        ignored = [s for s in sources if s not in allowed]
        assert not ignored, f"{ignore.name} keeps {ignored} out of the build context"


def test_postgres_init_creates_one_database_per_service(
    services: dict[str, dict[str, Any]],
) -> None:
    created = set(re.findall(r"CREATE DATABASE (\w+);", POSTGRES_INIT.read_text()))
    assert created == {"airflow", "mlflow", "feast"}
    mounts = _mounts(services["postgres"])
    assert ("./compose/postgres-init.sql", True) in {
        (src, ro) for src, target, ro in mounts if target.startswith("/docker-entrypoint-initdb.d/")
    }
    named = [src for src, _, _ in mounts if _is_named_volume(src)]
    assert named, "postgres data must live on a named volume"
    used = {
        url.rsplit("/", 1)[-1]
        for svc in services.values()
        for url in _env(svc).values()
        if "@postgres:5432/" in url
    }
    assert used == created, f"databases used {sorted(used)} != created {sorted(created)}"


def test_published_ports_bind_to_loopback(services: dict[str, dict[str, Any]]) -> None:
    published = [(name, port) for name, svc in services.items() for port in svc.get("ports", [])]
    assert published, "no published ports: the UIs would be unreachable"
    for name, port in published:
        assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port!r} on all interfaces"
    assert "ports" not in services["postgres"] and "ports" not in services["redis"]


def test_gpu_override_changes_tfserving_and_adds_a_gpu_worker(
    services: dict[str, dict[str, Any]],
) -> None:
    gpu = _load(GPU_COMPOSE)["services"]
    assert set(gpu) == {"tfserving", "airflow-worker", "airflow-worker-gpu"}
    override = gpu["tfserving"]
    cpu_tag = _image_tag(services["tfserving"]["image"])
    assert _image_tag(override["image"]) == f"{cpu_tag}-gpu"
    devices = override["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in device.get("capabilities", []) for device in devices)
    assert set(override) == {"image", "deploy"}, "flags and volumes must stay in the base file"
    # Training goes to the gpu queue: with the override only the GPU worker serves it.
    assert gpu["airflow-worker"] == {"command": "celery worker --queues default"}
    worker = gpu["airflow-worker-gpu"]
    assert worker["extends"] == {"file": "docker-compose.yaml", "service": "airflow-worker"}
    assert worker["command"] == "celery worker --queues gpu"
    assert worker["build"]["args"]["TF_CUDA"] == "1"
    assert "TF_CUDA" in (ROOT / worker["build"]["dockerfile"]).read_text()
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in device.get("capabilities", []) for device in devices)


def test_training_tasks_go_to_the_queue_the_workers_serve() -> None:
    # A task routed to a queue no worker serves waits forever, silently.
    from airflow.dag_processing.dagbag import DagBag
    from recops.scale import WORKER_QUEUES

    dag = DagBag(dag_folder=str(ROOT / "dags")).dags.get("recsys_nightly")
    assert dag is not None
    queues = {task.task_id: task.queue for task in dag.tasks}
    assert {queues["train"], queues["rank"], queues["compress"]} == {"gpu"}
    assert set(queues.values()) <= set(WORKER_QUEUES)


def test_compose_and_the_local_scale_profile_agree(services: dict[str, dict[str, Any]]) -> None:
    # `make scale-up` and docker-compose are one topology: same executor, same recops
    # settings switched on, same kinds of stores behind them.
    from recops.scale import ScaleConfig, stack_env

    secrets = {"MLFLOW_TRACKING_USERNAME": "u", "MLFLOW_TRACKING_PASSWORD": "p"}
    local = stack_env(ScaleConfig(home=Path("/tmp/recops-scale-check")), secrets)
    container = _env(services["airflow-worker"])
    for key in ("AIRFLOW__CORE__EXECUTOR", "RECOPS_PROFILE"):
        assert local[key] == container[key], key
    for key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "RECOPS_FEAST_REGISTRY_URL"):
        assert local[key].startswith("postgresql+psycopg2://") and container[key].startswith(
            "postgresql+psycopg2://"
        ), key
    assert local["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    assert local["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    assert local["MLFLOW_TRACKING_URI"].startswith("http://") and container[
        "MLFLOW_TRACKING_URI"
    ].startswith("http://")
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        assert key in local and key in container, key
    # Both select the Redis online store (compose through the scale default).
    from recops.config import Settings

    assert local["RECOPS_ONLINE_STORE"] == "redis"
    assert "RECOPS_ONLINE_STORE" not in container or container["RECOPS_ONLINE_STORE"] == "redis"
    assert (
        Settings.__dataclass_fields__["online_store"].default == "sqlite"
    )  # embedded stays SQLite


@pytest.mark.skipif(shutil.which("bash") is None, reason="gen-env.sh is a bash script")
def test_gen_env_writes_every_required_variable(tmp_path: Path) -> None:
    def generate(out: Path) -> dict[str, str]:
        result = subprocess.run(
            ["bash", str(GEN_ENV), str(out)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
        pairs = [line.split("=", 1) for line in out.read_text().splitlines() if "=" in line]
        return {key: value for key, value in pairs if not key.startswith("#")}

    first = generate(tmp_path / "a.env")
    required = _required_names()
    assert required <= {key for key, value in first.items() if value}, (
        f"gen-env.sh leaves {sorted(required - first.keys())} unset"
    )
    assert set(first) <= _documented_names().keys(), "gen-env.sh writes undocumented variables"
    assert stat.S_IMODE((tmp_path / "a.env").stat().st_mode) == 0o600
    assert len(base64.urlsafe_b64decode(first["AIRFLOW_FERNET_KEY"])) == 32
    # It goes inside connection URLs unescaped.
    assert re.fullmatch(r"[0-9a-f]{32,}", first["POSTGRES_PASSWORD"])
    # MLflow refuses to bootstrap its admin with a password under 12 characters.
    assert len(first["MLFLOW_TRACKING_PASSWORD"]) >= 12

    second = generate(tmp_path / "b.env")
    for name in required:
        if _SECRET_NAME.search(name):
            assert first[name] != second[name], f"{name} is not random"

    before = (tmp_path / "a.env").read_text()
    again = subprocess.run(
        ["bash", str(GEN_ENV), str(tmp_path / "a.env")], capture_output=True, text=True, check=False
    )
    assert again.returncode != 0 and "not overwriting" in again.stderr
    assert (tmp_path / "a.env").read_text() == before


def test_the_recommend_service_runs_beside_tfserving(services: dict[str, dict[str, Any]]) -> None:
    recommend = services["recommend"]
    # The Airflow build, shared by its local name (built once by the Airflow services).
    assert recommend["image"] == services["airflow-worker"]["image"]
    assert "build" not in recommend
    assert recommend["entrypoint"][-1] == "recops.service.server"
    deps = _depends_on(recommend)
    assert deps.get("tfserving") == "service_healthy"
    assert deps.get("airflow-init") == "service_completed_successfully"
    health = " ".join(recommend["healthcheck"]["test"])
    assert "/healthz" in health and ":8000" in health
    env = _env(recommend)
    # The scale profile requires the events token: compose refuses to start without one.
    assert env["RECOPS_PROFILE"] == "scale"
    assert re.fullmatch(r"\$\{RECOPS_EVENTS_TOKEN:\?[^}]+\}", env["RECOPS_EVENTS_TOKEN"])
    assert env["RECOPS_SERVING_HOST"] == "tfserving"
    port = int(recommend["command"][recommend["command"].index("--port") + 1])
    assert env["RECOPS_RECOMMEND_PORT"] == str(port)
    assert any(str(p).endswith(f":{port}") for p in recommend["ports"])
    # It reads models.config and writes the staging log on the shared state volume.
    state = [m for m in _mounts(recommend) if m[1] == "/opt/recops/state"]
    assert state and _is_named_volume(state[0][0]) and not state[0][2]
