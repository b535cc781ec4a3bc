"""How to trade quality against cost: one frozen, validated value used by the core and both adapters.

A :class:`RoutingPolicy` holds at most one of

* ``lam`` — the trade-off λ ≥ 0 of the rule argmin (1 − q) + λ·c̃ (see :mod:`uniroute_core.rule`);
* ``budget`` — a mean cost per call > 0; λ is calibrated on the router's probe prompts;
* ``min_quality`` — "cheapest adequate": the cheapest member with expected quality ≥ this value in [0, 1].

None of them means λ = 0, the member predicted best. The value is checked once, when it is built, with messages that
name the field and the value; everything downstream (``UniRouter.route``, ``MemberSelector``, the replay preview,
``ChatUniRoute`` and ``UniRouteLLM``) takes a ready policy instead of re-checking three loose numbers, so the rules
cannot drift apart between them.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Literal

__all__ = ["RoutingPolicy", "PolicyMode"]

PolicyMode = Literal["lam", "budget", "min_quality"]


def _number(field: str, value: object) -> float:
    """``value`` as a float; booleans and non-numbers are refused with a message naming ``field``."""
    if isinstance(value, bool):
        raise TypeError(f"RoutingPolicy: {field} must be a number, got the boolean {value!r}")
    if not isinstance(value, numbers.Real):  # a string like "2" is a mistake, not a number to parse
        raise TypeError(f"RoutingPolicy: {field} must be a number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class RoutingPolicy:
    """At most one of ``lam`` / ``budget`` / ``min_quality``; validated at construction, immutable afterwards.

    Raises:
        ValueError: more than one is given, ``lam`` is negative or not finite, ``budget`` is not a finite number
            > 0, or ``min_quality`` lies outside [0, 1]. The message names the field and the value.
        TypeError: a value is not a number.

    Example::

        policy = RoutingPolicy(budget=2.5)      # mean cost per call
        router.route(prompts, policy=policy)    # same as router.route(prompts, budget=2.5)
    """

    lam: float | None = None
    """Trade-off λ ≥ 0: higher sends more traffic to cheaper members."""
    budget: float | None = None
    """Mean cost per call (> 0, in the members' cost unit); λ is calibrated on the probe prompts."""
    min_quality: float | None = None
    """Cheapest member whose expected quality is at least this value in [0, 1]; if none is, the best one."""

    def __post_init__(self) -> None:
        given = [n for n in ("lam", "budget", "min_quality") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"RoutingPolicy: give only one of lam, budget, min_quality; got {given}")
        if self.lam is not None:
            lam = _number("lam", self.lam)
            if not math.isfinite(lam) or lam < 0:
                raise ValueError(f"RoutingPolicy: lam must be a finite number >= 0, got {self.lam!r}")
            object.__setattr__(self, "lam", lam)
        if self.budget is not None:
            budget = _number("budget", self.budget)
            if not math.isfinite(budget) or budget <= 0:
                raise ValueError(
                    f"RoutingPolicy: budget must be a finite number > 0 (mean cost per call), got {self.budget!r}"
                )
            object.__setattr__(self, "budget", budget)
        if self.min_quality is not None:
            mq = _number("min_quality", self.min_quality)
            if not 0.0 <= mq <= 1.0:  # also refuses NaN
                raise ValueError(f"RoutingPolicy: min_quality must lie in [0, 1], got {self.min_quality!r}")
            object.__setattr__(self, "min_quality", mq)

    @property
    def mode(self) -> PolicyMode:
        """``"budget"``, ``"min_quality"``, or ``"lam"`` (also when nothing is given: λ = 0)."""
        if self.budget is not None:
            return "budget"
        if self.min_quality is not None:
            return "min_quality"
        return "lam"

    @classmethod
    def coerce(
        cls,
        policy: RoutingPolicy | None = None,
        *,
        lam: float | None = None,
        budget: float | None = None,
        min_quality: float | None = None,
    ) -> RoutingPolicy:
        """``policy`` itself, or one built from the loose keyword values (the convenient call form).

        Giving both a ``policy`` and any loose value is an error: which one should win would be a guess.
        """
        if policy is None:
            return cls(lam=lam, budget=budget, min_quality=min_quality)
        if not isinstance(policy, RoutingPolicy):
            raise TypeError(f"policy must be a RoutingPolicy, got {type(policy).__name__}")
        loose = [n for n, v in (("lam", lam), ("budget", budget), ("min_quality", min_quality)) if v is not None]
        if loose:
            raise ValueError(f"give either policy= or {loose}, not both")
        return policy
