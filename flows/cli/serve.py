"""`mlops serve` and `mlops build`: the prediction service, and the Bento that serves without a tracking server."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from components.core.environment import workspace_environment
from components.core.errors import UserError
from flows.cli.common import (
    ConfigOption,
    ModelOption,
    _champions,
    _fail,
    _model,
    _reachable_store,
    _workspace,
    err,
)


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(
    config_path: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default from config: 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from config: 3000).")] = None,
    name: ModelOption = None,
    allow_unauthenticated: Annotated[
        bool,
        typer.Option(
            "--allow-unauthenticated", help="Serve on a non-loopback address without MLOPS_API_KEY (not advised)."
        ),
    ] = False,
) -> None:
    """Serve a model's champion over HTTP with BentoML: POST /predict, GET /metadata, /healthz, /readyz.

    The service follows the `champion` alias (serving.reload_seconds) and logs every prediction
    under the workspace. Set MLOPS_API_KEY to require `Authorization: Bearer <key>`; on an address
    other than loopback it is required unless --allow-unauthenticated. Several models are served
    side by side by one `mlops serve --name N --port P` each.
    """
    from components.core.config import find_config_file

    model_name, config = _model(config_path, name, "`mlops serve`")
    bind = host or config.serving.host
    if not _loopback(bind) and not os.environ.get("MLOPS_API_KEY") and not allow_unauthenticated:
        _fail(
            f"refusing to serve on {bind} without MLOPS_API_KEY: anyone who reaches it could read the model's "
            "answers and fill its prediction log. Set MLOPS_API_KEY, or pass --allow-unauthenticated"
        )
    workspace = _workspace(config)
    _reachable_store(workspace)
    champions = _champions(workspace, [model_name])
    if not champions or champions[0]["version"] is None:
        _fail(f"registered model {model_name!r} has no champion yet; run `mlops run` first")
    from serving.service import PROJECT_ROOT, service_target

    env = dict(os.environ)
    env["MLOPS_MODEL_NAME"] = model_name
    # Tree ensembles' thread pools turn single-row requests into tens of ms with 1 s stalls.
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(variable, "1")
    env["MLOPS_HOME"] = str(workspace.root)
    workspace_environment(workspace, env)
    config_file = config_path or find_config_file()
    if config_file:
        env["MLOPS_CONFIG"] = str(Path(config_file).resolve())
    bentoml = Path(sys.executable).parent / "bentoml"
    args = [
        str(bentoml),
        "serve",
        service_target(),
        "--host",
        bind,
        "--port",
        str(port or config.serving.port),
        "--working-dir",
        str(PROJECT_ROOT),
    ]
    auth = "bearer token required" if env.get("MLOPS_API_KEY") else "no auth (set MLOPS_API_KEY to require a token)"
    err.print(f"serving {model_name} v{champions[0]['version']} on http://{bind}:{args[6]} ({auth})", highlight=False)
    os.execve(str(bentoml), args, env)


def build(
    config_path: ConfigOption = None,
    name: ModelOption = None,
    bentofile: Annotated[
        Path | None, typer.Option("--bentofile", help="Build options (default: bentofile.yaml of the project).")
    ] = None,
) -> None:
    """Pack the current champion into a Bento that serves without the tracking server.

    The model is copied into BentoML's store under the workspace; `bentoml containerize <tag>`
    (Docker) turns the printed Bento tag into an image.
    """
    from components.tracking import registry

    model_name, config = _model(config_path, name, "`mlops build`")
    workspace = _workspace(config)
    from serving.build import build_bento, bundle_champion
    from serving.service import PROJECT_ROOT

    try:
        client = registry.connect(workspace)
        champion = registry.get_champion(client, model_name)
        if champion is None:
            _fail(f"registered model {model_name!r} has no champion yet; run `mlops run` first")
        model_tag = bundle_champion(client, model_name, champion.version, config.data.id_column)
        bento_tag = build_bento(
            PROJECT_ROOT,
            bentofile or PROJECT_ROOT / "bentofile.yaml",
            workspace.root / "bentoml" / "build",
            model_tag,
            model_name,
            champion.version,
        )
    except UserError as exc:  # a bad Bento file or schema, a missing champion, ...
        _fail(str(exc), exc.exit_status)
    err.print(
        f"built Bento {bento_tag} with {model_name} v{champion.version} (model {model_tag})\n"
        f"  serve it:  BENTOML_HOME={os.environ['BENTOML_HOME']} bentoml serve {bento_tag}\n"
        f"  image:     BENTOML_HOME={os.environ['BENTOML_HOME']} bentoml containerize {bento_tag}",
        highlight=False,
        soft_wrap=True,
    )
    print(bento_tag)
