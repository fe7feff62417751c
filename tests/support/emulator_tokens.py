"""Raw token requests to the emulator (no provider code), for the emulator's own tests."""

from __future__ import annotations

from typing import Any

import requests

from deyel_provider.emulator import RunningEmulator

CLIENT = ("DEYELBOT", "BOTDEYEL312!")


def token_post(
    emu: RunningEmulator, data: dict[str, str], auth: Any = CLIENT, **kwargs: Any
) -> requests.Response:
    return requests.post(emu.url + emu.settings.token_path, data=data, auth=auth, timeout=10, **kwargs)


def get_token(emu: RunningEmulator) -> str:
    response = token_post(emu, {"grant_type": "client_credentials"})
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
