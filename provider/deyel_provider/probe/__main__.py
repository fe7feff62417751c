"""python -m deyel_provider.probe: the deyel-probe command."""

from __future__ import annotations

import sys

from deyel_provider.probe.cli import main

sys.exit(main())
