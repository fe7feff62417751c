"""``deyel-probe``: what a real Deyel tenant does (token, API prefix, paging) and the extras to set.

Deyel documents no API prefix, no paging and no token error statuses (``deyel-api.md``, section 5), so the
first question on a new tenant is what this server does. The probe asks it, read-only: one token POST, then
only GETs of a form's instances, with pages of a few instances (one page of the connection's ``page_size``
checks for a cap). Candidates are the connection's own values first, then common spellings, then any given
on the command line. It never writes, and never sends the token to another host (redirects are not followed).
"""

from __future__ import annotations

from deyel_provider.probe.cli import main, render
from deyel_provider.probe.prober import Prober
from deyel_provider.probe.results import Answer, Finding, ProbeFailed, ProbeResult

__all__ = ["Answer", "Finding", "ProbeFailed", "ProbeResult", "Prober", "main", "render"]
