"""Everything one emulator instance holds, shared by its HTTP layer and its in-process API."""

from __future__ import annotations

from typing import Any

from deyel_provider.emulator.clock import Clock
from deyel_provider.emulator.faults import FaultInjector, Holds
from deyel_provider.emulator.settings import EmulatorSettings
from deyel_provider.emulator.stats import RateLimiter, Stats
from deyel_provider.emulator.store import DataStore
from deyel_provider.emulator.tokens import TokenAuthority
from deyel_provider.emulator.writer import ConcurrentWriter


class EmulatorState:
    def __init__(self, settings: EmulatorSettings, control_token: str | None = None) -> None:
        self.settings = settings
        #: What the control routes (``/_emulator/...``) require in the ``X-Emulator-Token`` header; None:
        #: nothing (an emulator that only loopback clients reach).
        self.control_token = control_token
        self.tokens = TokenAuthority(settings.token_ttl)
        self.clock = Clock()
        self.store = DataStore(settings, self.clock)
        self.stats = Stats()
        self.faults = FaultInjector()
        #: The delay rules' waits, released when the emulator stops.
        self.holds = Holds()
        self.limiter = RateLimiter(settings.rate_limit, settings.rate_window)
        self.writer = ConcurrentWriter(settings, self.store)

    def stats_snapshot(self) -> dict[str, Any]:
        snapshot = self.stats.snapshot()
        snapshot["active_tokens"] = self.tokens.active_count()
        return snapshot

    def issued_tokens(self) -> dict[str, list[str]]:
        return {"tokens": self.tokens.access_tokens(), "refresh_tokens": self.tokens.refresh_tokens()}
