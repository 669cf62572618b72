"""`headwater rollout show|switch|rollback|set`: what serves a pipeline's entities, and
operators' changes to it (the learner applies them between two batches)."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from shared.rollout.state import RolloutError, Routing, check_request
from shared.rollout.store import RolloutStore

rollout_app = typer.Typer(
    help="Rollout of a pipeline's models: policy, champion, challenger, decisions.",
    no_args_is_help=True,
)
out = Console()

PipelineArg = Annotated[str, typer.Argument(help="Pipeline name.")]
WaitOption = Annotated[float, typer.Option(help="Seconds to wait for the learner to apply it.")]


def _store(pipeline: str) -> tuple[RolloutStore, list[str]]:
    """The pipeline's rollout store and its models (from the spec its learner runs)."""
    from shared.keys import PipelineKeys
    from shared.redis_store import RedisStore
    from shared.settings import load_settings

    redis = RedisStore.from_settings(load_settings())
    redis.ping()
    raw = redis.client.get(PipelineKeys(pipeline).learner_spec)
    if raw is None:
        raise typer.BadParameter(f"no learner has run pipeline {pipeline!r}", param_hint="PIPELINE")
    names = [m["name"] for m in json.loads(raw)["models"]]
    return RolloutStore(redis.client, pipeline), names


def _state(store: RolloutStore, pipeline: str) -> dict[str, Any]:
    state, _ = store.read(1)
    if state is None:
        raise typer.BadParameter(
            f"pipeline {pipeline!r} has no rollout (no serving.rollout in its spec, or its "
            "learner has not run with one)",
            param_hint="PIPELINE",
        )
    return state


@rollout_app.command("show")
def show(pipeline: PipelineArg, limit: Annotated[int, typer.Option(min=1, max=100)] = 10) -> None:
    """The routing, phase, test evidence and the newest decisions."""
    store, _ = _store(pipeline)
    state = _state(store, pipeline)
    _, decisions = store.read(limit)
    routing = state["routing"]
    out.print(
        f"champion [bold]{routing['champion']}[/], challenger {routing['challenger']}, "
        f"policy {routing['policy']} (share {routing['share']}), phase {state['phase']}, "
        f"previous champion {state['previous']}",
        highlight=False,
    )
    if state.get("agreement") is not None:
        out.print(f"champion and challenger agree on {state['agreement']:.1%} of events")
    if state.get("test"):
        test = state["test"]
        out.print(
            f"test: {test['pairs']} labels compared, losses {test['champion_loss']:.4f} "
            f"(champion) and {test['challenger_loss']:.4f} (challenger); log wealth "
            f"{test['log_wealth_challenger']:.2f} against the bound {test['bound']:.2f}",
            highlight=False,
        )
    table = Table("seq", "kind", "source", "champion", "challenger", "policy", "at event", "labels")
    for d in decisions:
        evidence = d.get("evidence") or {}
        table.add_row(
            str(d["seq"]),
            d["kind"],
            d["source"],
            d["champion"],
            str(d["challenger"]),
            d["policy"],
            str(d["event_id"] or ""),
            str(evidence.get("pairs", "")),
        )
    out.print(table)


def _request(pipeline: str, request: dict[str, Any], wait: float) -> None:
    store, names = _store(pipeline)
    state = _state(store, pipeline)
    try:
        check_request(request, names, Routing.from_wire(state["routing"]))
    except RolloutError as exc:
        raise typer.BadParameter(str(exc)) from None
    before = state["decisions"]
    store.request(request)
    out.print(f"rollout {request['action']} requested", highlight=False)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        now, decisions = store.read(5)
        if now is not None and now["decisions"] > before:
            done = next(
                (d for d in decisions if d["seq"] > before and d["source"] == "operator"), None
            )
            if done is not None:
                out.print(
                    f"applied: champion {done['champion']}, challenger {done['challenger']}, "
                    f"policy {done['policy']} (decision {done['seq']})",
                    highlight=False,
                )
                return
        time.sleep(0.2)
    out.print(
        f"not applied within {wait:.0f} s: is a learner for {pipeline!r} running? The "
        "request stays pending and is applied when one takes over (a refused one is logged "
        "by the learner)."
    )
    raise typer.Exit(3)


@rollout_app.command("switch")
def switch(pipeline: PipelineArg, wait: WaitOption = 30.0) -> None:
    """Champion and challenger swap (blue-green's switch), in one step."""
    _request(pipeline, {"action": "switch"}, wait)


@rollout_app.command("rollback")
def rollback(pipeline: PipelineArg, wait: WaitOption = 30.0) -> None:
    """The champion before the last switch or promotion serves again, in one step."""
    _request(pipeline, {"action": "rollback"}, wait)


@rollout_app.command("set")
def set_(
    pipeline: PipelineArg,
    policy: Annotated[str | None, typer.Option(help="blue-green, canary or shadow.")] = None,
    challenger: Annotated[str | None, typer.Option(help="A model of the spec.")] = None,
    share: Annotated[float | None, typer.Option(min=0, max=1, help="The canary's share.")] = None,
    wait: WaitOption = 30.0,
) -> None:
    """Change the policy, the challenger or the canary's share."""
    request: dict[str, Any] = {"action": "set"}
    for name, value in (("policy", policy), ("challenger", challenger), ("share", share)):
        if value is not None:
            request[name] = value
    _request(pipeline, request, wait)
