"""Rollout logic (issue 25, first part): the canary's entity split and the paired
sequential test that promotes or retires a challenger."""

from __future__ import annotations

import random

import pytest

from shared.rollout.canary import position, serves_challenger
from shared.rollout.promotion import PairedTest

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
    runs = [run(seed, 0.30, 0.30, 3_000) for seed in range(200)]
    promoted = sum(t.decision == "promote" for t in runs)
    print(f"false promotions: {promoted} of {len(runs)} (bound: 5%)")
    assert promoted <= 10


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
