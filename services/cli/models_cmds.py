"""`headwater models list|rollback`: a pipeline's checkpoint history, and going back in it."""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from shared.checkpoint.store import CheckpointStore

models_app = typer.Typer(help="Model versions (checkpoints) of a pipeline.", no_args_is_help=True)
out = Console()


def _store(pipeline: str) -> CheckpointStore:
    from shared.redis_store import RedisStore
    from shared.settings import load_settings

    settings = load_settings()
    keys = settings.checkpoint_keys()
    redis = RedisStore.from_settings(settings)
    redis.ping()
    return CheckpointStore(redis.client, pipeline, "learner", keys, keep=settings.checkpoints_kept)


@models_app.command("list")
def models_list(pipeline: Annotated[str, typer.Argument(help="Pipeline name.")]) -> None:
    """Checkpoint versions, newest first, with each model's metrics at that point."""
    store = _store(pipeline)
    versions = store.versions()
    if not versions:
        raise typer.BadParameter(f"no checkpoints for pipeline {pipeline!r}", param_hint="PIPELINE")
    table = Table("version", "written (UTC)", "age", "reason", "events", "labels", "metrics")
    now = time.time()
    for info in versions:
        meta = info.meta
        metrics = "; ".join(
            f"{model}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items())
            for model, values in meta.get("metrics", {}).items()
        )
        written = dt.datetime.fromtimestamp(info.created_at, tz=dt.UTC).strftime(
            "%Y-%m-%d %H:%M:%S"
        )
        table.add_row(
            str(info.version),
            written,
            f"{now - info.created_at:,.0f} s",
            str(meta.get("reason", "")),
            str(meta.get("events_seen", "")),
            str(meta.get("labels_learned", "")),
            metrics,
        )
    out.print(table)


@models_app.command("rollback")
def models_rollback(
    pipeline: Annotated[str, typer.Argument(help="Pipeline name.")],
    model: Annotated[str, typer.Argument(help="Model name from the spec.")],
    version: Annotated[int, typer.Argument(help="Checkpoint version to continue from.")],
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for the learner to apply it.")
    ] = 30.0,
) -> None:
    """Make the running learner continue MODEL from checkpoint VERSION."""
    store = _store(pipeline)
    _, state = store.load(version)  # HMAC-verified: the version is real and readable
    if model not in state.core.models:
        raise typer.BadParameter(
            f"version {version} has no model {model!r} (it has {list(state.core.models)})",
            param_hint="MODEL",
        )
    before = store.latest_version() or 0
    store.request_rollback(model, version)
    out.print(f"rollback of {model!r} to version {version} requested", highlight=False)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        for info in store.versions():
            if info.version > before and str(info.meta.get("reason", "")).startswith("rollback"):
                out.print(
                    f"applied: the learner wrote version {info.version} ({info.meta['reason']})"
                )
                return
        time.sleep(0.2)
    out.print(
        f"not applied within {wait:.0f} s: is a learner for {pipeline!r} running? "
        "The request stays pending and is applied when one takes over."
    )
    raise typer.Exit(3)
