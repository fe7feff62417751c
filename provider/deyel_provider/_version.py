"""The package version, alone at the lowest layer: the package, its provider info and the build read it."""

from __future__ import annotations

__version__ = "0.1.0"
