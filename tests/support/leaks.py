"""Scanning everything a user or an attacker could read for secrets and issued tokens."""

from __future__ import annotations

import json
import logging

from airflow.sdk.log import mask_secret  # noqa: F401  (the masker the provider feeds)

from deyel_provider.exceptions import DeyelError


def all_issued(emulator) -> list[str]:
    """Every access and refresh token the emulator handed out."""
    return [token for tokens in emulator.issued_tokens().values() for token in tokens]


class LeakScanner:
    """Collects everything a user or an attacker could read, then looks for secrets in it.

    What is kept: ``str`` and ``repr`` of any object (hooks, configs, tokens, caches, XCom values, rendered
    template fields, cache contents), every part of an exception, and at the end every log record
    (``caplog``) and everything written to stdout/stderr (``capsys``, where task loggers write).
    """

    def __init__(self, caplog, capsys) -> None:
        caplog.set_level(logging.DEBUG)
        self._caplog = caplog
        self._capsys = capsys
        self.seen: list[str] = []

    def keep(self, *objects: object) -> None:
        self.seen.extend(f"{obj}\n{obj!r}" for obj in objects)

    def failing(self, call) -> DeyelError:
        """Run ``call``, which must raise a DeyelError, and keep every part of that error."""
        try:
            call()
        except DeyelError as error:
            self.keep(error, error.args, error.errors, vars(error))
            return error
        raise AssertionError("expected a DeyelError")

    def keep_task(self, operator, context: dict, *, xcom: bool = True) -> object:
        """Render and run ``operator``; keep its rendered template fields, its hook and (unless excluded)
        the XCom value it returns."""
        operator.render_template_fields(context)
        result = operator.execute(context)
        self.keep(operator, *(getattr(operator, field) for field in operator.template_fields))
        if "hook" in dir(type(operator)):
            self.keep(operator.hook, operator.hook.config, operator.hook.token_provider)
        if xcom:
            self.keep(result, json.dumps(result, default=str))
        return result

    def haystack(self) -> str:
        captured = self._capsys.readouterr()
        self.seen += [captured.out, captured.err]
        records = [f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in self._caplog.records]
        return "\n".join(self.seen + records)

    def lines(self, logger: str) -> list[str]:
        return [r.getMessage() for r in self._caplog.records if r.name == logger]

    def assert_no_leak(self, secrets: list[str]) -> str:
        haystack = self.haystack()
        assert all(secrets), "an empty secret would match anything"
        # Positions in ``secrets``, not the values: a failure report must not print what leaked.
        leaked = [n for n, secret in enumerate(secrets) if secret in haystack]
        assert leaked == [], f"secrets or tokens number {leaked} of {len(secrets)} found in the output"
        return haystack
