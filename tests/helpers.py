"""Constants and small helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

import json

# The documented example credentials, which the emulator accepts by default.
CLIENT_ID = "DEYELBOT"
CLIENT_SECRET = "BOTDEYEL312!"


def connection_json(url: str, **extra) -> str:
    return json.dumps(
        {"conn_type": "deyel", "host": url, "login": CLIENT_ID, "password": CLIENT_SECRET, "extra": extra}
    )
