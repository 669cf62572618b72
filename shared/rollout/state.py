"""A pipeline's rollout: which model serves each entity, which one scores in the shadow,
and the decisions that change that (the paired test's on matured labels, or an
operator's). Pure logic: the learner owns a `Rollout` in its checkpointed state; whoever
publishes predictions (the learner, or scorers through the model snapshot) routes by its
`Routing`.

Policies:
  blue-green  every entity is served by the champion; `switch` swaps champion and
              challenger in one step, `rollback` swaps back
  canary      the challenger serves the entities a stable hash puts in its `share`
              (canary.py), the champion the others
  shadow      the champion serves every entity; the challenger scores every one too, its
              predictions go to the shadow topic, never served

With `promotion`, a challenger is on trial: each label matured for both models is a pair
for the paired test (promotion.py). "promote" makes it the champion, serving every entity
(blue-green), and a watch begins: the same test with the roles turned, over at most
`watch_labels` pairs; if the old champion proves better it is rolled back ("rollback"),
otherwise the promotion stands ("confirm"). A challenger that cannot win is "retire"d: the
champion serves every entity. Every decision is a record (`Decision`) carrying its
evidence; the same labels in the same order give the same decisions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from shared.rollout.canary import serves_challenger
from shared.rollout.promotion import PairedTest

POLICIES = ("blue-green", "canary", "shadow")
ACTIONS = ("switch", "rollback", "set")  # an operator's requests (API, CLI)

Decision = dict[str, Any]  # plain values: it crosses to the learner's side by marshal


class RolloutError(ValueError):
    """An operator's request that cannot be applied, saying why."""


@dataclass(frozen=True, slots=True)
class Routing:
    """Who serves each entity; what a publisher of predictions needs."""

    champion: str
    challenger: str | None = None
    policy: str = "blue-green"
    share: float = 0.0  # canary: the challenger's share of entities

    @property
    def salt(self) -> str:
        """The canary's hash key: another pair of models tests on other entities."""
        return f"{self.champion}>{self.challenger}"

    def route(self, entity: str) -> tuple[str, str | None]:
        """(the model that serves this entity, the model scoring it in the shadow or None)."""
        challenger = self.challenger
        if challenger is None or self.policy == "blue-green":
            return self.champion, None
        if self.policy == "shadow":
            return self.champion, challenger
        if serves_challenger(entity, self.share, self.salt):
            return challenger, None
        return self.champion, None

    def to_wire(self) -> dict[str, Any]:
        return {
            "champion": self.champion,
            "challenger": self.challenger,
            "policy": self.policy,
            "share": self.share,
        }

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Routing:
        return cls(wire["champion"], wire["challenger"], wire["policy"], wire["share"])


@dataclass(frozen=True, slots=True)
class PromotionSpec:
    confidence: float = 0.95
    label_budget: int = 10_000  # pairs after which an undecided challenger is retired
    watch_labels: int = 2_000  # pairs after a promotion in which it may be rolled back
    loss_scale: float = 1.0  # regression: a pair's loss is min(1, |error| / loss_scale)
    min_improvement: float = 0.01  # in expected loss: how much better a challenger must be


@dataclass(frozen=True, slots=True)
class RolloutSpec:
    """The spec's `serving.rollout` section."""

    challenger: str | None = None
    policy: str = "blue-green"
    share: float = 0.1
    promotion: PromotionSpec | None = None


def pair_loss(task: str, prediction: Any, label: Any, scale: float) -> float:
    """A model's loss on one label, in [0, 1]: 0/1 for classification, the absolute error
    over `scale` (at most 1) for regression."""
    if task == "regression":
        error = abs(float(prediction) - float(label)) / scale
        return 1.0 if math.isnan(error) else min(1.0, error)
    return 0.0 if prediction == label else 1.0


@dataclass
class Rollout:
    """The learner's rollout state, checkpointed with its models."""

    spec: RolloutSpec
    champion: str  # the spec's: what an operator's changes started from
    task: str
    routing: Routing
    phase: str = "settled"  # "trial" (a challenger on test), "watch" (after a promotion)
    test: PairedTest | None = None
    previous: str | None = None  # the champion before the last change: rollback's target
    decisions: int = 0  # records so far: the next one's `seq`
    agreed: int = 0  # events where champion and challenger predicted the same
    compared: int = 0
    _at: tuple[int, int] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_spec(cls, spec: RolloutSpec, champion: str, task: str) -> Rollout:
        routing = Routing(champion, spec.challenger, spec.policy, spec.share)
        rollout = cls(spec, champion, task, routing)
        if spec.promotion is not None and spec.challenger is not None:
            rollout._trial()
        return rollout

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_at": None}

    # -- per record ---------------------------------------------------------------------

    def positions(self, names: Iterable[str]) -> tuple[int, int] | None:
        """Where champion and challenger are among the scores, in `names`' order (cached)."""
        at = self._at
        if at is None and self.routing.challenger is not None:
            order = list(names)
            at = self._at = (
                order.index(self.routing.champion),
                order.index(self.routing.challenger),
            )
        return at

    def note_scores(self, names: Iterable[str], scores: Sequence[tuple[Any, Any]]) -> None:
        """An event scored: do champion and challenger agree (the shadow's agreement)?"""
        at = self.positions(names)
        if at is not None:
            self.compared += 1
            if scores[at[0]][0] == scores[at[1]][0]:
                self.agreed += 1

    def observe(
        self, names: Iterable[str], label: Any, scores: Sequence[tuple[Any, Any]]
    ) -> Decision | None:
        """A label matured for the predictions in `scores`: one pair for the test, and the
        decision it leads to, if any. A pair where either model could not predict yet is
        not one."""
        test, at = self.test, self.positions(names)
        if test is None or at is None:
            return None
        first, second = scores[at[0]][0], scores[at[1]][0]
        if first is None or second is None:
            return None
        assert self.spec.promotion is not None
        scale = self.spec.promotion.loss_scale
        outcome = test.observe(
            pair_loss(self.task, first, label, scale), pair_loss(self.task, second, label, scale)
        )
        if outcome is None:
            return None
        return self._decide(outcome)

    # -- decisions ------------------------------------------------------------------------

    def _trial(self) -> None:
        promotion = self.spec.promotion
        assert promotion is not None
        self.phase = "trial"
        self.test = PairedTest(
            promotion.confidence, promotion.label_budget, promotion.min_improvement
        )

    def _decide(self, outcome: str) -> Decision:
        test = self.test
        assert test is not None
        evidence = test.evidence()
        routing = self.routing
        assert routing.challenger is not None
        if self.phase == "trial" and outcome == "promote":
            kind = "promote"
            self._serve(Routing(routing.challenger, routing.champion), previous=routing.champion)
            promotion = self.spec.promotion
            assert promotion is not None
            if promotion.watch_labels > 0:
                self.phase = "watch"
                self.test = PairedTest(
                    promotion.confidence, promotion.watch_labels, promotion.min_improvement
                )
        elif self.phase == "trial":
            kind = "retire"
            self._serve(replace(routing, policy="blue-green", share=0.0))
        elif outcome == "promote":  # in the watch, the old champion proved better
            kind = "rollback"
            self._serve(Routing(routing.challenger, routing.champion), previous=routing.champion)
        else:
            kind = "confirm"
            self._serve(routing)
        return self._record(kind, "test", evidence)

    def _serve(self, routing: Routing, previous: str | None = None) -> None:
        self.routing = routing
        self._at = None
        self.phase, self.test = "settled", None
        if previous is not None:
            self.previous = previous

    def _record(self, kind: str, source: str, evidence: Mapping[str, Any] | None) -> Decision:
        self.decisions += 1
        return {
            "seq": self.decisions,
            "kind": kind,
            "source": source,
            "routing": self.routing.to_wire(),
            "previous": self.previous,
            "phase": self.phase,
            "evidence": None if evidence is None else dict(evidence),
        }

    def apply(self, request: Mapping[str, Any], names: Sequence[str]) -> Decision:
        """An operator's request (`check_request` says what is accepted); its decision."""
        check_request(request, names, self.routing)
        action = request["action"]
        routing = self.routing
        if action == "switch":
            assert routing.challenger is not None
            self._serve(
                Routing(routing.challenger, routing.champion, routing.policy, routing.share),
                previous=routing.champion,
            )
        elif action == "rollback":
            if self.previous is None:
                raise RolloutError("nothing to roll back to: no switch or promotion yet")
            self._serve(
                Routing(self.previous, routing.champion, "blue-green"),
                previous=routing.champion,
            )
        else:
            challenger = request.get("challenger", routing.challenger)
            new = Routing(
                routing.champion,
                challenger,
                request.get("policy", routing.policy),
                float(request.get("share", routing.share)),
            )
            trial = self.spec.promotion is not None and challenger is not None
            restart = trial and (challenger != routing.challenger or self.phase == "settled")
            testing = self.test if not restart else None
            phase = self.phase
            self._serve(new)
            if restart:
                self._trial()
            elif testing is not None:
                self.phase, self.test = phase, testing
        return self._record(action, "operator", None)

    def state(self) -> dict[str, Any]:
        """For readers (the learner's status, the API)."""
        return {
            "routing": self.routing.to_wire(),
            "phase": self.phase,
            "previous": self.previous,
            "decisions": self.decisions,
            "agreement": self.agreed / self.compared if self.compared else None,
            "compared": self.compared,
            "test": None if self.test is None else self.test.evidence(),
        }


def check_request(
    request: Mapping[str, Any], names: Sequence[str], routing: Routing | None = None
) -> None:
    """Raise RolloutError unless the request can be applied (to `routing`, when given)."""
    action = request.get("action")
    if action not in ACTIONS:
        raise RolloutError(f"action {action!r}: choose one of {ACTIONS}")
    unknown = set(request) - {"action", "policy", "challenger", "share"}
    if unknown:
        raise RolloutError(f"unknown fields {sorted(unknown)}")
    if action != "set" and len(request) > 1:
        raise RolloutError(f"{action} takes no other field")
    policy = request.get("policy")
    if policy is not None and policy not in POLICIES:
        raise RolloutError(f"policy {policy!r}: choose one of {POLICIES}")
    share = request.get("share")
    if share is not None and (
        isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1
    ):
        raise RolloutError(f"share {share!r}: a number from 0 to 1")
    challenger = request.get("challenger")
    if challenger is not None and challenger not in names:
        raise RolloutError(f"challenger {challenger!r} is not one of the models {list(names)}")
    if routing is None:
        return
    if action == "switch" and routing.challenger is None:
        raise RolloutError("no challenger to switch to: set one first")
    if challenger is not None and challenger == routing.champion:
        raise RolloutError(f"{challenger!r} is the champion")
    policy = request.get("policy", routing.policy)
    serving_challenger = request.get("challenger", routing.challenger)
    if action == "set" and policy != "blue-green" and serving_challenger is None:
        raise RolloutError("canary and shadow need a challenger")


def carried_rollout(saved: Rollout | None, fresh: Rollout | None) -> Rollout | None:
    """After a restore: the checkpoint's rollout (its decisions and an operator's changes
    stand) while the spec's section is the one it started from; the spec's, fresh, when
    the section was changed or added; none when it was removed."""
    if fresh is None:
        return None
    if saved is None or saved.spec != fresh.spec or saved.champion != fresh.champion:
        return fresh
    return saved
