"""Rollout logic (issue 25, first part): the canary's entity split and the paired
sequential test that promotes or retires a challenger."""

from __future__ import annotations

import random

import pytest

from shared.rollout.canary import position, serves_challenger
from shared.rollout.promotion import PairedTest
from shared.rollout.state import (
    PromotionSpec,
    Rollout,
    RolloutError,
    RolloutSpec,
    Routing,
    carried_rollout,
    check_request,
    pair_loss,
)

ENTITIES = [f"entity-{i}" for i in range(10_000)]


def test_a_ten_percent_canary_serves_ten_percent_of_entities_give_or_take_one():
    share = sum(serves_challenger(e, 0.10, "rollout-a") for e in ENTITIES) / len(ENTITIES)
    assert 0.09 <= share <= 0.11, share


def test_an_entity_always_gets_the_same_model_and_a_wider_canary_only_adds_entities():
    at_10 = {e for e in ENTITIES if serves_challenger(e, 0.10, "rollout-a")}
    assert at_10 == {e for e in ENTITIES if serves_challenger(e, 0.10, "rollout-a")}
    at_20 = {e for e in ENTITIES if serves_challenger(e, 0.20, "rollout-a")}
    assert at_10 < at_20


def test_two_rollouts_do_not_test_on_the_same_entities():
    a = {e for e in ENTITIES if serves_challenger(e, 0.10, "rollout-a")}
    b = {e for e in ENTITIES if serves_challenger(e, 0.10, "rollout-b")}
    assert len(a & b) / len(ENTITIES) < 0.02  # independent: about 1%


def test_a_share_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="between 0 and 1"):
        serves_challenger("e", 1.5, "r")
    assert 0.0 <= position("e", "r") < 1.0


def run(seed: int, champion_error: float, challenger_error: float, n: int) -> PairedTest:
    """Independent 0/1 losses of both models on `n` matured labels."""
    rng = random.Random(seed)
    test = PairedTest(confidence=0.95, label_budget=n)
    for _ in range(n):
        if test.observe(
            float(rng.random() < champion_error), float(rng.random() < challenger_error)
        ):
            break
    return test


def test_a_truly_better_challenger_is_promoted():
    runs = [run(seed, 0.30, 0.20, 5_000) for seed in range(20)]
    assert [t.decision for t in runs] == ["promote"] * 20
    assert max(t.pairs for t in runs) < 2_000  # well inside the budget


def test_a_worse_challenger_is_retired_and_an_undecided_one_at_the_budget():
    assert run(1, 0.20, 0.30, 5_000).decision == "retire"
    # five pairs cannot reach the bound (each multiplies the wealth by at most 1.5)
    undecided = run(2, 0.30, 0.30, 5)
    assert (undecided.decision, undecided.pairs) == ("retire", 5)


def test_equal_models_are_promoted_at_most_at_the_tests_error_rate():
    """Checked at every label, as a running service checks: Ville's inequality bounds the
    false promotions by 1 - confidence (5%) all the same."""
    runs = [run(seed, 0.30, 0.30, 3_000) for seed in range(400)]
    promoted = sum(t.decision == "promote" for t in runs)
    print(f"false promotions: {promoted} of {len(runs)} (bound: 5%)")
    # 5% of 400 is 20; two standard deviations of a binomial count above it is 28.7
    assert promoted <= 28


def test_the_same_pairs_give_the_same_decision_and_evidence():
    a, b = run(7, 0.30, 0.22, 5_000), run(7, 0.30, 0.22, 5_000)
    assert a.evidence() == b.evidence()
    evidence = a.evidence()
    assert evidence["decision"] == "promote"
    assert evidence["log_wealth_challenger"] >= evidence["bound"]
    assert evidence["challenger_loss"] < evidence["champion_loss"]


def test_a_loss_outside_zero_to_one_is_refused_and_a_decision_is_final():
    test = PairedTest()
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        test.observe(2.0, 0.0)
    test.decision = "promote"
    assert test.observe(1.0, 0.0) == "promote"
    assert test.pairs == 0


# -- the rollout's state: routing, the test's decisions, operators' requests ----------------

NAMES = ("champ", "chal", "third")


def rollout(policy: str = "canary", promotion: PromotionSpec | None = None) -> Rollout:
    spec = RolloutSpec(challenger="chal", policy=policy, share=0.1, promotion=promotion)
    return Rollout.from_spec(spec, "champ", "binary")


def test_each_policy_routes_as_documented():
    canary = rollout("canary").routing
    served = [canary.route(e) for e in ENTITIES]
    assert {shadow for _, shadow in served} == {None}
    share = sum(model == "chal" for model, _ in served) / len(ENTITIES)
    assert 0.09 <= share <= 0.11, share
    assert served == [canary.route(e) for e in ENTITIES]  # the same entity, the same model
    assert {rollout("shadow").routing.route(e) for e in ENTITIES[:100]} == {("champ", "chal")}
    assert {rollout("blue-green").routing.route(e) for e in ENTITIES[:100]} == {("champ", None)}
    assert Routing.from_wire(canary.to_wire()) == canary


def feed(r: Rollout, pairs: list[tuple[bool, bool]], until_one: bool = False) -> list[dict]:
    """Labels True; each pair says whether the models "champ" and "chal" (whatever their
    roles now) predicted it."""
    decisions = []
    for champ_right, chal_right in pairs:
        scores = ((champ_right, None), (chal_right, None), (True, None))
        decision = r.observe(NAMES, True, scores)
        if decision is not None:
            decisions.append(decision)
            if until_one:
                break
    return decisions


def test_a_better_challenger_is_promoted_then_confirmed_in_the_watch():
    r = rollout("canary", PromotionSpec(watch_labels=300))
    assert r.phase == "trial"
    rng = random.Random(3)
    better = [(rng.random() < 0.7, rng.random() < 0.85) for _ in range(3000)]
    decisions = feed(r, better)
    kinds = [d["kind"] for d in decisions]
    assert kinds[0] == "promote"
    promote = decisions[0]
    assert promote["routing"] == {
        "champion": "chal",
        "challenger": "champ",
        "policy": "blue-green",
        "share": 0.0,
    }
    assert promote["previous"] == "champ"
    assert promote["evidence"]["log_wealth_challenger"] >= promote["evidence"]["bound"]
    # in the watch the new champion is still better: the promotion stands
    assert kinds[1:] == ["confirm"]
    assert r.phase == "settled"
    assert r.routing.route("anyone") == ("chal", None)


def test_a_promotion_that_falls_behind_in_the_watch_is_rolled_back():
    r = rollout("shadow", PromotionSpec(watch_labels=2000))
    rng = random.Random(4)
    pairs = [(rng.random() < 0.6, rng.random() < 0.9) for _ in range(2000)]
    assert [d["kind"] for d in feed(r, pairs, until_one=True)] == ["promote"]
    assert r.phase == "watch"
    # now the old champion, "champ", is the better one
    decisions = feed(r, [(rng.random() < 0.9, rng.random() < 0.6) for _ in range(2000)])
    assert [d["kind"] for d in decisions] == ["rollback"]
    assert r.routing.champion == "champ"
    assert r.phase == "settled"


def test_a_challenger_that_cannot_win_is_retired_and_serves_no_one():
    r = rollout("canary", PromotionSpec(label_budget=500))
    rng = random.Random(5)
    decisions = feed(r, [(rng.random() < 0.8, rng.random() < 0.8) for _ in range(1000)])
    assert [d["kind"] for d in decisions] == ["retire"]
    assert r.routing.policy == "blue-green"
    assert {r.routing.route(e)[0] for e in ENTITIES[:1000]} == {"champ"}


def test_decisions_are_the_same_on_the_same_labels():
    rng = random.Random(6)
    pairs = [(rng.random() < 0.7, rng.random() < 0.8) for _ in range(3000)]
    a, b = rollout("canary", PromotionSpec()), rollout("canary", PromotionSpec())
    assert feed(a, pairs) == feed(b, pairs)


def test_operators_switch_roll_back_and_set_in_one_step():
    r = rollout("blue-green")
    switched = r.apply({"action": "switch"}, NAMES)
    assert (switched["kind"], switched["source"]) == ("switch", "operator")
    assert r.routing.route("e") == ("chal", None)
    r.apply({"action": "rollback"}, NAMES)
    assert r.routing.route("e") == ("champ", None)
    r.apply({"action": "set", "policy": "shadow", "challenger": "third"}, NAMES)
    assert r.routing.route("e") == ("champ", "third")
    assert r.decisions == 3


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"action": "promote"}, "choose one of"),
        ({"action": "set", "policy": "a/b"}, "policy"),
        ({"action": "set", "share": 1.5}, "share"),
        ({"action": "set", "share": True}, "share"),
        ({"action": "set", "challenger": "nobody"}, "not one of the models"),
        ({"action": "set", "challenger": "champ"}, "is the champion"),
        ({"action": "set", "colour": "red"}, "unknown fields"),
        ({"action": "switch", "share": 0.2}, "takes no other field"),
    ],
)
def test_a_bad_request_is_refused_saying_why(request_, message):
    with pytest.raises(RolloutError, match=message):
        check_request(request_, NAMES, rollout().routing)


def test_rollback_before_any_change_is_refused():
    with pytest.raises(RolloutError, match="nothing to roll back"):
        rollout().apply({"action": "rollback"}, NAMES)


def test_a_restored_rollout_stands_unless_the_spec_changed():
    saved = rollout("canary")
    saved.apply({"action": "switch"}, NAMES)
    assert carried_rollout(saved, rollout("canary")) is saved
    fresh = rollout("shadow")
    assert carried_rollout(saved, fresh) is fresh
    assert carried_rollout(saved, None) is None


def test_regression_losses_are_scaled_and_bounded():
    assert pair_loss("regression", 2.0, 1.0, 4.0) == 0.25
    assert pair_loss("regression", 100.0, 1.0, 4.0) == 1.0
    assert pair_loss("binary", True, False, 1.0) == 1.0
