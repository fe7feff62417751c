"""Which branch each example of a property test took, and a final check that enough reached success.

A property whose every example ends in its accepted-failure branch proves nothing about the success path,
so each property test records its branch per example (``hypothesis.event``: it shows in
``--hypothesis-show-statistics``) and counts it here; the test then asserts a minimum share of successes.
The pattern: the ``@given`` function is defined inside the test, called once, then checked::

    def test_x(fixture):
        branches = Branches()

        @settings(...)
        @given(...)
        def example(...):
            ...
            branches.took("success")

        example()
        branches.assert_share("success", at_least=0.6)
"""

from __future__ import annotations

import re
from collections import Counter

from hypothesis import event


class Branches:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def took(self, branch: str) -> None:
        """Record ``branch`` for this example (shrinking replays count too: the share is over all runs)."""
        event(branch)
        self.counts[branch] += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def assert_share(self, branch: str, *, at_least: float, examples: int = 10) -> None:
        """At least ``examples`` examples ran and a share ``at_least`` of them took ``branch``."""
        assert self.total >= examples, f"only {self.total} examples ran: {dict(self.counts)}"
        share = self.counts[branch] / self.total
        below = f"{branch!r} in {share:.0%} of examples, below {at_least:.0%}"
        assert share >= at_least, f"{below}: {dict(self.counts)}"


def message_class(message: str, classes: dict[str, str]) -> str:
    """The one class whose pattern the message matches; fails on none or several (a vague match passes a
    reader that fails for the wrong reason)."""
    matched = [name for name, pattern in classes.items() if re.search(pattern, message)]
    assert len(matched) == 1, f"message matches {matched or 'no class'}: {message}"
    return matched[0]
