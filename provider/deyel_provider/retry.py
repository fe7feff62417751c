"""The one retry policy of the provider: which failures are worth another attempt, and how long to wait.

Every call to Deyel goes through it: the hook's requests (and so the operators and the extraction) and the
token POST. Exponential backoff with full jitter, ``Retry-After`` honoured up to a cap, and no replay of a
non-idempotent call whose body may already have reached the server unless the caller opts in.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import tenacity

from deyel_provider.exceptions import DeyelConnectionError, DeyelError, DeyelRateLimitError

if TYPE_CHECKING:
    from collections.abc import Callable

    from deyel_provider.config import DeyelConfig

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Methods that mean the same thing when sent twice (RFC 9110 9.2.2): safe to replay whatever happened.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a transient failure.

    :param attempts: attempts in all, the first included (1 turns retrying off).
    :param backoff: base of the exponential backoff, in seconds (the n-th retry waits up to
        ``backoff * 2 ** (n - 1)``, drawn uniformly from zero: "full jitter").
    :param max_backoff: ceiling of one backoff wait, in seconds.
    :param max_retry_after: ceiling of a wait the server asks for with ``Retry-After``, in seconds.
    """

    attempts: int = 5
    backoff: float = 1.0
    max_backoff: float = 30.0
    max_retry_after: float = 120.0

    @classmethod
    def from_config(cls, config: DeyelConfig) -> RetryPolicy:
        return cls(
            attempts=max(1, int(config.retry_attempts)),
            backoff=float(config.retry_backoff),
            max_backoff=float(config.retry_max_backoff),
            max_retry_after=float(config.retry_after_max),
        )

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
        ceiling = min(self.max_backoff, self.backoff * 2.0 ** min(attempt - 1, 60))
        return random.uniform(0.0, ceiling)

    def call(
        self,
        attempt: Callable[[], T],
        *,
        method: str,
        path: str,
        replay_safe: bool,
        on_retry: Callable[[BaseException], None] | None = None,
    ) -> T:
        """Run ``attempt`` until it returns, or raise its last error when that is final or attempts run out.

        The error raised is marked ``retries_exhausted``, so a policy wrapping this one (a data call whose
        token request failed) does not multiply the attempts.

        :param method: HTTP method, for the log line.
        :param path: URL path without query, for the log line.
        :param replay_safe: see :meth:`should_retry`.
        :param on_retry: told of each error that is about to be retried (``max_workers="auto"`` backs off on
            rate limits).
        """

        def log_retry(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            what = (
                f"HTTP {error.status}"
                if isinstance(error, DeyelError) and error.status
                else (type(error).__name__)
            )
            sleep = state.next_action.sleep if state.next_action else 0.0
            if on_retry is not None and error is not None:
                on_retry(error)
            log.warning(
                "Deyel %s %s failed (%s); retry %d of %d in %.2f s",
                method,
                path,
                what,
                state.attempt_number,
                self.attempts - 1,
                sleep,
            )

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=lambda state: self.wait(
                state.attempt_number, state.outcome.exception() if state.outcome else None
            ),
            retry=tenacity.retry_if_exception(lambda e: self.should_retry(e, replay_safe=replay_safe)),
            before_sleep=log_retry,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except DeyelError as error:
            if not error.retries_exhausted:
                # An inner policy (the token request inside a data call) already counted its own attempts.
                error.attempts = int(retrying.statistics.get("attempt_number", 1))
            error.retries_exhausted = True
            raise


def is_replay_safe(method: str, *, opted_in: bool = False) -> bool:
    """Whether a call with ``method`` may be sent twice; ``opted_in`` is the caller's ``retry_unsafe``."""
    return opted_in or method.upper() in IDEMPOTENT_METHODS
