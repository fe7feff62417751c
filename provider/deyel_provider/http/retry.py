"""The one retry policy of the provider: which failures are worth another attempt, and how long to wait.

Every call to Deyel goes through it: the hook's requests (and so the operators and the extraction) and the
token POST. Exponential backoff with full jitter, ``Retry-After`` honoured up to a cap, and no replay of a
non-idempotent call whose body may already have reached the server unless the caller opts in.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import tenacity

from deyel_provider.connection.fields import DEFAULTS
from deyel_provider.exceptions import DeyelConnectionError, DeyelError, DeyelRateLimitError
from deyel_provider.http.deadline import sleep as cancellable_sleep

if TYPE_CHECKING:
    from collections.abc import Callable

    from deyel_provider.connection.settings import DeyelConfig

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Methods that mean the same thing when sent twice (RFC 9110 9.2.2): safe to replay whatever happened.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})

#: What a renewal may take beyond its attempts and waits: the shared cache's lookups, store and release
#: around the POST (a Redis call answers within 2 s or counts as a fault), with room to spare.
RENEWAL_MARGIN = 5.0


@dataclass(frozen=True)
class RenewalBudget:
    """How long one token renewal may take, derived from the retry policy and the request timeout.

    The one place where it is computed (see :meth:`RetryPolicy.renewal_budget`); docs/tokens.md states it.

    :param fetching: the renewing process starts no attempt, and sleeps no wait, that could end past this
        many seconds after the renewal began (a ``Retry-After`` that does not fit ends the renewal with the
        last typed error); an answer still arriving then is cut off.
    :param total: ``fetching`` plus one request timeout (the read cut off at that point) plus
        ``RENEWAL_MARGIN``: how long another process waits for a renewal whose holder is alive, and how
        long a Redis holder keeps its lease alive.
    """

    fetching: float
    total: float


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a transient failure.

    :param attempts: attempts in all, the first included (1 turns retrying off).
    :param backoff: base of the exponential backoff, in seconds (the n-th retry waits up to
        ``backoff * 2 ** (n - 1)``, drawn uniformly from zero: "full jitter").
    :param max_backoff: ceiling of one backoff wait, in seconds.
    :param max_retry_after: ceiling of a wait the server asks for with ``Retry-After``, in seconds.
    """

    attempts: int = DEFAULTS["retry_attempts"]
    backoff: float = DEFAULTS["retry_backoff"]
    max_backoff: float = DEFAULTS["retry_max_backoff"]
    max_retry_after: float = DEFAULTS["retry_after_max"]

    @classmethod
    def from_config(cls, config: DeyelConfig) -> RetryPolicy:
        return cls(
            attempts=config.retry_attempts,  # validated: a whole number >= 1
            backoff=float(config.retry_backoff),
            max_backoff=float(config.retry_max_backoff),
            max_retry_after=float(config.retry_after_max),
        )

    def renewal_budget(self, timeout: float) -> RenewalBudget:
        """The budget of one token renewal under this policy, with ``timeout`` the request timeout.

        ``fetching = attempts * 2 * timeout + sum of the backoff ceilings`` (an attempt waits up to
        ``timeout`` to connect, then up to ``timeout`` for the answer; the n-th wait is at most
        ``min(max_backoff, backoff * 2 ** (n - 1))``); ``total = fetching + timeout + RENEWAL_MARGIN``.
        With the defaults (5 attempts, 30 s, backoff 1 s up to 30 s): 315 s and 350 s.
        """
        # The ceilings double until they reach max_backoff (within 64 steps), then stay there: sum the
        # first ones, count the rest (attempts can be large: no loop over them).
        rising = min(self.attempts - 1, 64)
        waits = sum(self._ceiling(n) for n in range(1, rising + 1))
        waits += (self.attempts - 1 - rising) * self._ceiling(64)
        fetching = self.attempts * 2 * timeout + waits
        return RenewalBudget(fetching=fetching, total=fetching + timeout + RENEWAL_MARGIN)

    def _ceiling(self, attempt: int) -> float:
        return min(self.max_backoff, self.backoff * 2.0 ** min(attempt - 1, 60))

    def should_retry(self, error: BaseException, *, replay_safe: bool) -> bool:
        """Whether ``error`` is worth another attempt.

        :param replay_safe: the call may be sent twice (an idempotent method, the token POST, or a caller
            that opted in); otherwise only failures where the server certainly did not process the request
            are retried: a rate limit, or a connection that was never made.
        """
        if not isinstance(error, DeyelError) or error.retries_exhausted or not error.transient:
            return False
        if replay_safe:
            return True
        if isinstance(error, DeyelRateLimitError):
            return True
        return isinstance(error, DeyelConnectionError) and not error.request_sent

    def wait(self, attempt: int, error: BaseException | None) -> float:
        """Seconds to sleep before attempt ``attempt + 1``: the server's ``Retry-After``, else the backoff."""
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            return min(float(retry_after), self.max_retry_after)
        return random.uniform(0.0, self._ceiling(attempt))

    def call(
        self,
        attempt: Callable[[], T],
        *,
        method: str,
        path: str,
        replay_safe: bool,
        on_retry: Callable[[BaseException], None] | None = None,
        deadline: float | None = None,
        attempt_time: float = 0.0,
    ) -> T:
        """Run ``attempt`` until it returns, or raise its last error when that is final or attempts run out.

        The error raised is marked ``retries_exhausted``, so a policy wrapping this one (a data call whose
        token request failed) does not multiply the attempts.

        :param method: HTTP method, for the log line.
        :param path: URL path without query, for the log line.
        :param replay_safe: see :meth:`should_retry`.
        :param on_retry: told of each error that is about to be retried (``max_workers="auto"`` backs off on
            rate limits).
        :param deadline: a ``time.monotonic()`` past which no wait or attempt may run: a retry whose wait
            plus ``attempt_time`` (the longest an attempt takes) would end later is not made, and the last
            error is raised (a token renewal's budget, see :meth:`renewal_budget`).
        """
        out_of_time = _StopAtDeadline(deadline, attempt_time)

        def log_retry(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            sleep = state.next_action.sleep if state.next_action else 0.0
            if on_retry is not None and error is not None:
                on_retry(error)
            log.warning(
                "Deyel %s %s failed (%s); retry %d of %d in %.2f s",
                method,
                path,
                _what(error),
                state.attempt_number,
                self.attempts - 1,
                sleep,
            )

        retrying = tenacity.Retrying(
            stop=tenacity.stop_any(tenacity.stop_after_attempt(self.attempts), out_of_time),
            wait=lambda state: self.wait(
                state.attempt_number, state.outcome.exception() if state.outcome else None
            ),
            retry=tenacity.retry_if_exception(lambda e: self.should_retry(e, replay_safe=replay_safe)),
            before_sleep=log_retry,
            sleep=cancellable_sleep,  # a cancelled trigger's call stops waiting
            reraise=True,
        )
        try:
            return retrying(attempt)
        except DeyelError as error:
            if out_of_time.stopped and not error.retries_exhausted:
                log.warning(
                    "Deyel %s %s failed (%s); not retried: another attempt would not end within the time "
                    "allowed",
                    method,
                    path,
                    _what(error),
                )
            if not error.retries_exhausted:
                # An inner policy (the token request inside a data call) already counted its own attempts.
                error.attempts = int(retrying.statistics.get("attempt_number", 1))
            error.retries_exhausted = True
            raise


class _StopAtDeadline(tenacity.stop.stop_base):
    """Stop when the next wait plus one whole attempt would end past ``deadline`` (``time.monotonic()``)."""

    def __init__(self, deadline: float | None, attempt_time: float) -> None:
        self.deadline = deadline
        self.attempt_time = attempt_time
        self.stopped = False

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        if self.deadline is None:
            return False
        if time.monotonic() + retry_state.upcoming_sleep + self.attempt_time <= self.deadline:
            return False
        self.stopped = True
        return True


def _what(error: BaseException | None) -> str:
    """An error as a log line names it: its HTTP status, else its class."""
    if isinstance(error, DeyelError) and error.status:
        return f"HTTP {error.status}"
    return type(error).__name__


def is_replay_safe(method: str, *, opted_in: bool = False) -> bool:
    """Whether a call with ``method`` may be sent twice; ``opted_in`` is the caller's ``retry_unsafe``."""
    return opted_in or method.upper() in IDEMPOTENT_METHODS
