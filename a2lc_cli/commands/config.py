"""``a2lc config show`` and ``a2lc config set``: the workspace config (one command group)."""

from __future__ import annotations

import json

import typer

from .. import ui
from ..config import dump_config, set_option
from ..errors import A2LCError
from ._common import JSON, workspace


def register(app: typer.Typer) -> None:
    config_app = typer.Typer(help="Show or change the workspace config.", no_args_is_help=True)
    config_app.command("show")(config_show)
    config_app.command("set")(config_set)
    app.add_typer(config_app, name="config")


def config_show(ctx: typer.Context, json_out: bool = JSON) -> None:
    """Print the workspace config as JSON (with --json: {"workspace", "path", "exists", "config"})."""
    ws = workspace(ctx)
    cfg = ws.config()
    if json_out:
        ui.print_json({"workspace": str(ws.root), "path": str(ws.config_path), "exists": ws.config_path.exists(),
                       "config": cfg.model_dump(mode="json")})
    else:
        print(dump_config(cfg), end="")


def config_set(
    ctx: typer.Context,
    assignments: list[str] = typer.Argument(..., help="KEY=VALUE pairs, e.g. lcm.alpha=0.3 method.budget=500"),
    json_out: bool = JSON,
) -> None:
    """Change config keys (validated; the file is rewritten atomically)."""
    ws = workspace(ctx)
    cfg = ws.config()
    keys = []
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep:
            raise A2LCError(f"expected KEY=VALUE (got {item!r})")
        cfg = set_option(cfg, key.strip(), value)
        keys.append(key.strip())
    with ws.lock("a2lc config set"):
        ws.save_config(cfg)
    data = cfg.model_dump(mode="json")
    changed = {}
    for key in keys:  # the values as stored (parsed and validated), not as typed
        node = data
        for part in key.split("."):
            node = node[part]
        changed[key] = node
    if json_out:
        ui.print_json({"workspace": str(ws.root), "path": str(ws.config_path), "changed": changed,
                       "config": data})
    else:
        ui.out.print(ui.esc(json.dumps(changed)))
