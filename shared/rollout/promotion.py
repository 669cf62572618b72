"""When a challenger has earned the champion's place: a sequential test that stays valid
however often it is looked at.

Both models are compared only on labels matured for both, as pairs: per label, the
difference of their losses, d = loss(champion) - loss(challenger), in [-1, 1] (0/1 loss for
classification; a bounded loss otherwise). "The challenger is better" is E[d] > 0. The test
bets on it: wealth starts at 1 and each pair multiplies it by (1 + bet * d), the bet chosen
from the pairs before only (never the current one) and kept in [0, MAX_BET]. While the
challenger is no better (E[d] <= 0 given the past), the wealth is a nonnegative
supermartingale, so by Ville's inequality it ever reaches 1/alpha with probability at most
alpha, whenever it is checked. Reaching it promotes the challenger; the mirror bet (on the
champion being better) retires it, as does a label budget spent without a decision. The
same pairs in the same order give the same decisions: replays agree.

This is the betting confidence sequence of Waudby-Smith and Ramdas (2023), with their
predictable plug-in bet: the mean of d over its variance, clipped. The mean and variance
are exponentially weighted (about the last WINDOW pairs): the bet must depend on past pairs
only, not weigh them all alike, and a challenger that becomes better after a concept drift
is bet on soon after, not once its advantage outweighs every pair before the drift.

With a `margin`, "better" means better by more than it: the bet is on d - margin, so a
challenger no more than `margin` better in expected loss is promoted with probability at
most alpha. Two models of equal expected skill are seldom equal once trained (two seeds
of one randomised estimator may differ by a point of error rate for thousands of labels),
and such a difference is not worth a switch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

MAX_BET = 0.5  # keeps every factor above 1/4 (d - margin >= -1.5): one pair never ruins it
PRIOR_MEAN, PRIOR_VAR, PRIOR_WEIGHT = 0.0, 0.25, 1.0  # shrink the first bets toward nothing
WINDOW = 500.0  # pairs the bet's mean and variance are weighted over

Decision = Literal["promote", "retire"]


@dataclass
class Bettor:
    """One side's wealth: bets that E[d] > 0 for the d it is given."""

    log_wealth: float = 0.0
    _n: float = PRIOR_WEIGHT
    _mean: float = PRIOR_MEAN
    _var: float = PRIOR_VAR

    def bet(self) -> float:
        """The next bet, from the pairs seen so far only."""
        return min(MAX_BET, max(0.0, self._mean / (self._var + self._mean**2)))

    def update(self, d: float) -> None:
        self.log_wealth += math.log1p(self.bet() * d)
        self._n = min(self._n + 1.0, WINDOW)
        delta = d - self._mean
        self._mean += delta / self._n
        self._var += (delta * (d - self._mean) - self._var) / self._n


@dataclass
class PairedTest:
    """Champion against challenger on matured labels; `decision` once the evidence says."""

    confidence: float = 0.95  # the spec's: alpha = 1 - confidence
    label_budget: int = 10_000  # pairs after which an undecided challenger is retired
    margin: float = 0.0  # how much lower the challenger's expected loss must be
    pairs: int = 0
    champion_loss: float = 0.0
    challenger_loss: float = 0.0
    decision: Decision | None = None
    better: Bettor = field(default_factory=Bettor)  # bets on the challenger
    worse: Bettor = field(default_factory=Bettor)  # bets on the champion

    def __post_init__(self) -> None:
        if not 0.5 <= self.confidence < 1.0:
            raise ValueError(f"confidence is in [0.5, 1), not {self.confidence}")
        if self.label_budget < 1:
            raise ValueError("label_budget must be at least 1")
        if not 0.0 <= self.margin < 0.5:
            raise ValueError(f"margin is in [0, 0.5), not {self.margin}")

    @property
    def bound(self) -> float:
        """The log wealth at which a side wins: log(1 / alpha)."""
        return -math.log(1.0 - self.confidence)

    def observe(self, champion_loss: float, challenger_loss: float) -> Decision | None:
        """One matured label, each model's loss on it (in [0, 1]); the decision, once made
        (later pairs change nothing)."""
        if self.decision is not None:
            return self.decision
        for loss in (champion_loss, challenger_loss):
            if not 0.0 <= loss <= 1.0:
                raise ValueError(f"a loss for the paired test is in [0, 1], not {loss}")
        d = champion_loss - challenger_loss
        self.pairs += 1
        self.champion_loss += champion_loss
        self.challenger_loss += challenger_loss
        self.better.update(d - self.margin)
        self.worse.update(-d)
        if self.better.log_wealth >= self.bound:
            self.decision = "promote"
        elif self.worse.log_wealth >= self.bound or self.pairs >= self.label_budget:
            self.decision = "retire"
        return self.decision

    def evidence(self) -> dict[str, float | int | str | None]:
        """What a decision record carries: labels compared, each model's mean loss, the
        test's statistics and bound."""
        n = max(1, self.pairs)
        return {
            "pairs": self.pairs,
            "champion_loss": self.champion_loss / n,
            "challenger_loss": self.challenger_loss / n,
            "log_wealth_challenger": self.better.log_wealth,
            "log_wealth_champion": self.worse.log_wealth,
            "bound": self.bound,
            "margin": self.margin,
            "decision": self.decision,
        }
