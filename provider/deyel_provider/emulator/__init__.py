"""A local Deyel server: the documented token endpoint and form-instance API, with switches and faults.

Use :func:`run_emulator` in tests, ``python -m deyel_provider.emulator`` (or ``deyel-emulator``) from a shell.
"""

from __future__ import annotations

from deyel_provider.emulator.app import create_app
from deyel_provider.emulator.server import RunningEmulator, run_emulator
from deyel_provider.emulator.settings import EmulatorSettings

__all__ = ["EmulatorSettings", "RunningEmulator", "create_app", "run_emulator"]
