"""Per-request cost after N token renewals in one process (a triggerer lives for weeks): the provider's
bounded registration with Airflow's secrets masker vs registering every token (what it did before).

Each step renews the token (``cache=none``: a token POST), makes one GET, and puts 20 log lines through
Airflow's masker, as a task's logging does. Airflow's masker recompiles one regex of every registered value at
each registration and runs it over every line, so registering every token makes each step slower.

    python -m bench masker
"""

from __future__ import annotations

import json
import os
import tempfile
import time

RENEWALS = 200
MARKS = (1, 10, 50, 100, 200)
LINE = "GET /forms/CRM_ACCOUNT/instances answered 200 in 12 ms " * 3


def _steps(register_every_token: bool) -> dict[int, tuple[float, int]]:
    from airflow.sdk.log import _secrets_masker

    from deyel_provider.auth import masking
    from deyel_provider.hooks.deyel import DeyelHook

    masker = _secrets_masker()
    masker.reset_masker()
    masking.forget_all()
    bound = masking.MAX_PER_CREDENTIAL
    # What the provider did before: every token registered, none ever removed.
    masking.MAX_PER_CREDENTIAL = RENEWALS * 10 if register_every_token else bound
    hook = DeyelHook()
    out: dict[int, tuple[float, int]] = {}
    for n in range(1, RENEWALS + 1):
        started = time.perf_counter()
        hook.get_token()
        hook.request("GET", "/forms/CRM_ACCOUNT/instances", params={"pageSize": 1})
        for _ in range(20):
            masker.redact(LINE)
        if n in MARKS:
            out[n] = ((time.perf_counter() - started) * 1000, len(masker.patterns))
    hook.close()
    masking.MAX_PER_CREDENTIAL = bound
    return out


def run() -> None:
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="deyel-bench-"))
    from deyel_provider.emulator import run_emulator

    with run_emulator(records=10) as emulator:
        os.environ["AIRFLOW_CONN_DEYEL_DEFAULT"] = json.dumps(
            {
                "conn_type": "deyel",
                "host": emulator.url,
                "login": "DEYELBOT",
                "password": "BOTDEYEL312!",
                "extra": {"cache": "none"},
            }
        )
        bounded = _steps(register_every_token=False)
        every = _steps(register_every_token=True)
    header = f"{'renewal':>8} | {'bounded ms':>10} {'patterns':>8} | {'every token ms':>14} {'patterns':>8}"
    print(f"{header} | ratio")
    print(f"{'-' * 8}-+-{'-' * 19}-+-{'-' * 23}-+------")
    for n in MARKS:
        (b_ms, b_pat), (e_ms, e_pat) = bounded[n], every[n]
        print(f"{n:>8} | {b_ms:>10.1f} {b_pat:>8} | {e_ms:>14.1f} {e_pat:>8} | {e_ms / b_ms:5.1f}x")


if __name__ == "__main__":
    run()
