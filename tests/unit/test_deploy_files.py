"""The server stack's files (deploy/, docs/stack.md), checked statically: no image is built and no
container runs here (no registry access), so these tests hold the Compose files, the Dockerfile, the
Kubernetes job template, deploy/.env.example and the docs page to each other and to the tools they
call. Where a `docker compose` is installed, `docker compose config` checks the Compose files too."""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
AUTH = DEPLOY / "compose.auth.yaml"
COMPOSE_FILES = (COMPOSE, AUTH)
DOCKERFILE = DEPLOY / "Dockerfile"
ENV_EXAMPLE = DEPLOY / ".env.example"
TEMPLATE = DEPLOY / "kubernetes" / "base-job-template.json"
STACK_PAGE = ROOT / "docs" / "stack.md"

SERVICES = {
    "postgres",
    "mlflow",
    "prefect-server",
    "prefect-worker",
    "deployer",
    "dask-scheduler",
    "dask-worker",
    "serve",
}
PYTHON_SERVICES = SERVICES - {"postgres"}
WORKSPACE_SERVICES = {"deployer", "prefect-worker", "dask-worker", "serve"}
SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "API_KEY", "AUTH_STRING")
TELEMETRY = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "BENTOML_DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GX_ANALYTICS_ENABLED": "false",
}
# ${NAME}, ${NAME:-default}, ${NAME:?message}; `$${...}` is a literal `${...}` for the container.
VARIABLE = re.compile(r"(?<!\$)\$\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
REQUIRED = re.compile(r"\$\{[A-Za-z_]\w*:\?[^}]*\}")
URL_WITH_PASSWORD = re.compile(r"://[^/\s:@]+:[^/\s@]+@")
PLACEHOLDER = re.compile(r"\{\{\s*([\w.$-]+)\s*\}\}")


def _compose(path: Path = COMPOSE) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _services(path: Path = COMPOSE) -> dict[str, dict[str, Any]]:
    return _compose(path)["services"]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def _uses(path: Path) -> list[re.Match[str]]:
    """Every ${...} in the file's values (Compose interpolates values, not comments)."""
    return [match for text in _strings(_compose(path)) for match in VARIABLE.finditer(text)]


def _variables(path: Path) -> set[str]:
    return {match["name"] for match in _uses(path)}


def _env_example() -> dict[str, str]:
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.lstrip().startswith("#"))


def _secret(name: str) -> bool:
    return any(word in name.upper() for word in SECRET_WORDS)


def _interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's interpolation, for the forms these files use: a required variable unset or empty fails."""

    def value(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"] or ""
        current = env.get(name, "")
        if op in (":?", "?") and not current:
            raise ValueError(f"{name}: {arg}")
        if op in (":-", "-") and not current:
            return arg
        return current

    return VARIABLE.sub(value, text).replace("$$", "$")


def _interpolated(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return _interpolate(node, env)
    if isinstance(node, dict):
        return {key: _interpolated(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [_interpolated(value, env) for value in node]
    return node


def _secrets_env() -> dict[str, str]:
    """A value for every required variable of both files."""
    uses = [match for path in COMPOSE_FILES for match in _uses(path)]
    return {match["name"]: f"test-{match['name'].lower()}" for match in uses if match["op"] == ":?"}


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    lines = [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


# --- the Compose files ---


def test_compose_file_has_every_service() -> None:
    services = _services()
    assert set(services) >= SERVICES, f"missing: {SERVICES - set(services)}"
    assert services["postgres"]["image"].startswith("postgres:16")
    assert set(_compose()["volumes"]) >= {"postgres-data", "mlflow-artifacts", "workspace"}


def test_python_services_run_the_project_image() -> None:
    images = set()
    for name in PYTHON_SERVICES:
        service = _services()[name]
        build = service.get("build")
        assert isinstance(build, dict), f"{name} does not build the project's image"
        context = (COMPOSE.parent / build["context"]).resolve()
        assert context == ROOT, f"{name}: the build context must be the repository root, not {context}"
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE
        images.add(service["image"])
    assert len(images) == 1, f"the Python services name different images: {images}"


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_no_secret_has_a_value_of_its_own(path: Path) -> None:
    compose = _compose(path)
    for name, service in compose["services"].items():
        for key, value in _environment(service).items():
            if _secret(key):
                assert REQUIRED.fullmatch(value), f"{path.name} {name}: {key} must be ${{VAR:?...}}, not {value!r}"
    # On the interpolated text: `postgresql://${USER}@...` is fine, `postgresql://u:${PASSWORD}@...` is not.
    for text in _strings(_interpolated(compose, _secrets_env())):
        assert not URL_WITH_PASSWORD.search(text), f"{path.name}: a URL with a password: {text}"
    for config in (compose.get("configs") or {}).values():
        parsed = configparser.ConfigParser(interpolation=None)
        parsed.read_string(config.get("content", ""))
        for section in parsed.sections():
            assert not [key for key in parsed[section] if "password" in key], f"{path.name}: a password in a config"


def test_env_example_lists_every_variable_with_the_same_default() -> None:
    example = _env_example()
    used: set[str] = set()
    for path in COMPOSE_FILES:
        for match in _uses(path):
            name = match["name"]
            used.add(name)
            assert name in example, f"{path.name} reads {name}, missing from deploy/.env.example"
            if match["op"] == ":-":
                assert example[name] == match["arg"], (
                    f"{name}: .env.example says {example[name]!r}, compose {match['arg']!r}"
                )
            if match["op"] == ":?":
                assert example[name] == "", f"{name} is a secret: leave it empty in deploy/.env.example"
    assert not set(example) - used, f"deploy/.env.example lists variables no Compose file reads: {set(example) - used}"
    assert all(example[name] == "" for name in example if _secret(name))


def test_docs_describe_every_variable() -> None:
    page = STACK_PAGE.read_text(encoding="utf-8")
    for path in COMPOSE_FILES:
        for name in _variables(path):
            assert f"`{name}`" in page, f"{name} ({path.name}) is not described in docs/stack.md"


def test_required_variables_refuse_to_interpolate_when_unset() -> None:
    env = _secrets_env()
    assert {"POSTGRES_PASSWORD", "PREFECT_API_AUTH_STRING", "MLOPS_API_KEY"} <= set(env)
    for path in COMPOSE_FILES:
        compose = _compose(path)
        assert _interpolated(compose, env)["services"]
        for name in _variables(path) & set(env):
            with pytest.raises(ValueError, match=name):
                _interpolated(compose, {key: value for key, value in env.items() if key != name})


def test_workspace_is_one_volume_at_mlops_home() -> None:
    services = _services()
    mounts = set()
    for name in WORKSPACE_SERVICES:
        volumes = [str(v) for v in services[name].get("volumes", [])]
        workspace = [v.split(":")[1] for v in volumes if v.split(":")[0] == "workspace"]
        assert len(workspace) == 1, f"{name} does not mount the workspace volume"
        assert _environment(services[name])["MLOPS_HOME"] == workspace[0], f"{name}: MLOPS_HOME is not the mount"
        mounts.add(workspace[0])
    assert len(mounts) == 1, f"the workspace is mounted at different paths: {mounts}"
    pipeline = _environment(services["prefect-worker"])
    for key in ("MLOPS__SCORING__DASK_ADDRESS", "MLOPS__SEARCH__DASK_ADDRESS"):
        assert pipeline[key].startswith("tcp://dask-scheduler:")
    assert _environment(services["serve"])["OMP_NUM_THREADS"] == "1"


def test_postgres_init_script_creates_every_database_the_stack_names() -> None:
    script = DEPLOY / "postgres" / "init-databases.sh"
    assert os.access(script, os.X_OK)
    created = set(re.search(r"for database in ([\w ]+);", script.read_text(encoding="utf-8"))[1].split())
    services = _services()
    mount = [str(v) for v in services["postgres"]["volumes"] if "docker-entrypoint-initdb.d" in str(v)]
    assert mount and (COMPOSE.parent / mount[0].split(":")[0]).resolve() == script
    mlflow = _command(services["mlflow"])
    named = {
        mlflow[mlflow.index("--backend-store-uri") + 1].rsplit("/", 1)[1],
        _environment(services["prefect-server"])["PREFECT_SERVER_DATABASE_NAME"],
    }
    auth = configparser.ConfigParser(interpolation=None)
    auth.read_string(_compose(AUTH)["configs"]["mlflow-basic-auth"]["content"])
    named.add(auth["mlflow"]["database_uri"].rsplit("/", 1)[1])
    assert named <= created, f"databases not created by the init script: {named - created}"


def test_auth_override_adds_basic_auth_to_the_base_command() -> None:
    base, override = _services(), _services(AUTH)
    assert set(override) <= set(base)
    assert _command(override["mlflow"]) == [*_command(base["mlflow"]), "--app-name", "basic-auth"]
    config = configparser.ConfigParser(interpolation=None)
    config.read_string(_compose(AUTH)["configs"]["mlflow-basic-auth"]["content"])
    assert set(config["mlflow"]) >= {"default_permission", "database_uri", "admin_username", "authorization_function"}
    target = override["mlflow"]["configs"][0]["target"]
    assert _environment(override["mlflow"])["MLFLOW_AUTH_CONFIG_PATH"] == target
    for name in ("deployer", "prefect-worker", "dask-worker", "serve"):
        assert {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} <= set(_environment(override[name]))


# --- the commands ---


@cache
def _mlops_commands() -> set[str]:
    import typer.main

    from flows.cli import app

    return set(typer.main.get_command(app).commands)


@cache
def _options(tool: str, *sub: str) -> frozenset[str] | None:
    """The options of `tool sub...`, or None when there is no such subcommand."""
    if tool == "mlflow":
        from mlflow.cli import cli

        command = cli.commands.get(sub[0])
        return None if command is None else frozenset(opt for p in command.params for opt in p.opts + p.secondary_opts)
    if tool == "dask":
        import importlib.metadata

        entry = {e.name: e for e in importlib.metadata.entry_points(group="dask_cli")}.get(sub[0])
        if entry is None:
            return None
        command = entry.load()
        return frozenset(opt for p in command.params for opt in p.opts + p.secondary_opts)
    # prefect: its CLI loads subcommands lazily; its help is the reliable listing.
    env = {**os.environ, "COLUMNS": "250", **TELEMETRY}
    result = subprocess.run(
        [str(Path(sys.executable).parent / tool), *sub, "--help"], capture_output=True, text=True, env=env, timeout=120
    )
    if result.returncode != 0:
        return None
    return frozenset(re.findall(r"--[a-z][a-z0-9-]*", result.stdout))


def _compose_commands() -> Iterator[tuple[str, list[str]]]:
    for path in COMPOSE_FILES:
        for name, service in _services(path).items():
            if command := _command(service):
                yield f"{path.name}:{name}", command


def test_every_command_names_a_real_subcommand() -> None:
    seen = set()
    for where, command in _compose_commands():
        tool = command[0]
        assert tool in {"mlops", "prefect", "mlflow", "dask"}, f"{where}: unexpected program {tool}"
        seen.add(tool)
        if tool == "mlops":
            # The options are the CLI's own business (tests/test_docs.py, docs/cli.md).
            assert command[1] in _mlops_commands(), f"{where}: no `mlops {command[1]}`"
            continue
        depth = 2 if tool == "prefect" else 1
        options = _options(tool, *command[1 : 1 + depth])
        assert options is not None, f"{where}: no `{' '.join(command[: 1 + depth])}`"
        flags = {part.split("=", 1)[0] for part in command if part.startswith("--")}
        assert flags <= options, f"{where}: {' '.join(command[: 1 + depth])} has no {sorted(flags - options)}"
    assert seen == {"mlops", "prefect", "mlflow", "dask"}


# --- the image ---


def test_dockerfile_copies_files_that_exist_and_are_sent() -> None:
    instructions = _dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    copied = []
    for instruction, arguments in instructions:
        if instruction == "COPY":
            parts = [part for part in arguments.split() if not part.startswith("--")]
            copied += parts[:-1]
    assert {"pyproject.toml", "uv.lock", "components", "flows", "serving", "mlops.yaml"} <= set(copied)
    for source in copied:
        assert (ROOT / source).exists(), f"deploy/Dockerfile copies {source}, which does not exist"
        assert f"!{source}" in ignored, f"{source} is excluded from the build context by Dockerfile.dockerignore"
    syncs = [arguments for instruction, arguments in instructions if instruction == "RUN" and "uv sync" in arguments]
    assert len(syncs) == 2 and "--no-install-project" in syncs[0] and "--no-install-project" not in syncs[1]
    assert all("--frozen" in sync and "--no-dev" in sync and "--extra server" in sync for sync in syncs)
    assert instructions.index(("RUN", syncs[0])) < instructions.index(("COPY", "components components/"))


def test_image_runs_as_a_user_with_telemetry_off() -> None:
    instructions = _dockerfile_instructions()
    env = {}
    for instruction, arguments in instructions:
        if instruction == "ENV":
            env.update(part.split("=", 1) for part in shlex.split(arguments))
    assert {key: env.get(key) for key in TELEMETRY} == TELEMETRY
    assert env["PATH"].startswith("/app/.venv/bin:")
    assert ("WORKDIR", "/app") in instructions
    users = [arguments for instruction, arguments in instructions if instruction == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert env["MLOPS_HOME"] == _environment(_services()["serve"])["MLOPS_HOME"]


# --- Kubernetes ---


def _template() -> dict[str, Any]:
    return json.loads(TEMPLATE.read_text(encoding="utf-8"))


def test_kubernetes_template_declares_every_placeholder() -> None:
    from prefect.server.schemas.actions import validate_base_job_template

    template = _template()
    assert set(template) == {"job_configuration", "variables"}
    assert template["variables"]["type"] == "object"
    declared = set(template["variables"]["properties"])
    used = {name for text in _strings(template["job_configuration"]) for name in PLACEHOLDER.findall(text)}
    assert used <= declared, f"undeclared placeholders: {used - declared}"
    assert declared <= used, f"variables no placeholder uses: {declared - used}"
    validate_base_job_template(template)  # what the Prefect API checks when the pool is created


def test_kubernetes_template_renders_the_project_job() -> None:
    from prefect.utilities.schema_tools import validate
    from prefect.utilities.templating import apply_values

    template = _template()
    schema = template["variables"]
    defaults = {name: prop["default"] for name, prop in schema["properties"].items() if prop.get("default") is not None}
    run_env = {"env": {"MLOPS_SERVED_CONFIGS": '["/app/mlops.yaml"]', "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"}}
    validate({**defaults, **run_env}, schema, raise_on_error=True, preprocess=True, ignore_required=True)

    job = apply_values(template["job_configuration"], {**defaults, **run_env})["job_manifest"]
    assert "{{" not in json.dumps(job)
    assert job["spec"]["backoffLimit"] == 0
    assert isinstance(job["spec"]["ttlSecondsAfterFinished"], int)
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    container = pod["containers"][0]
    assert container["name"] == "prefect-job"  # the name prefect-kubernetes looks for
    assert container["image"] == _interpolate(_services()["serve"]["image"], {})
    assert {"secretRef": {"name": "mlops-secrets"}} in container["envFrom"]
    assert any("configMapRef" in source for source in container["envFrom"])
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["OMP_NUM_THREADS"] == "1"
    assert {key: env.get(key) for key in TELEMETRY} == TELEMETRY
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v
    }
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert claims and all(mounts[name] == env["MLOPS_HOME"] for name in claims)
    resources = container["resources"]
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
    uid = next(a for i, a in _dockerfile_instructions() if i == "USER").split(":")[0]
    assert str(pod["securityContext"]["runAsUser"]) == uid


# --- the docs page ---


def test_docs_page_names_existing_files_and_is_in_the_nav() -> None:
    page = STACK_PAGE.read_text(encoding="utf-8")
    named = set(re.findall(r"`(deploy/[\w./-]+)`", page))
    assert {"deploy/compose.yaml", "deploy/Dockerfile", "deploy/kubernetes/base-job-template.json"} <= named
    missing = [path for path in named if not (ROOT / path).exists() and path != "deploy/.env"]
    assert not missing, f"docs/stack.md names files that do not exist: {missing}"
    assert "## Tested for real" in page
    assert "stack.md" in (ROOT / "mkdocs.yml").read_text(encoding="utf-8")


# --- Docker Compose itself, where it is installed ---


def _docker_compose() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=60)
    return docker if probe.returncode == 0 else None


def test_compose_files_resolve_with_the_secrets_set() -> None:
    env = _secrets_env()
    rendered = [_interpolated(_compose(path), env) for path in COMPOSE_FILES]
    assert rendered[0]["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == env["POSTGRES_PASSWORD"]
    docker = _docker_compose()
    if docker is None:
        return  # no Compose CLI on this machine: the Python checks above are all there is
    files = [arg for path in COMPOSE_FILES for arg in ("-f", str(path))]
    clean = {key: value for key, value in os.environ.items() if key not in env}
    for args in (["-f", str(COMPOSE)], files):
        ok = subprocess.run([docker, "compose", *args, "config", "-q"], env={**clean, **env}, capture_output=True)
        assert ok.returncode == 0, ok.stderr
    unset = {key: value for key, value in env.items() if key != "POSTGRES_PASSWORD"}
    refused = subprocess.run([docker, "compose", *files, "config", "-q"], env={**clean, **unset}, capture_output=True)
    assert refused.returncode != 0 and b"POSTGRES_PASSWORD" in refused.stderr
