"""Settings of the Deyel emulator: one switch per undocumented ([ASSUMED]) behaviour of the real server."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

Paging = Literal["page", "offset", "link", "none"]
Version = Literal["8.4", "8.0"]
UnauthorizedStyle = Literal["errors", "errorCode"]
DateFormat = Literal["epoch_ms", "iso"]
UpdatedOrder = Literal["random", "id"]
ListOrder = Literal["id", "dtLastUpdate"]
UpdatedUnit = Literal["ms", "s", "iso", "us", "ns"]

PAGING_CHOICES: tuple[str, ...] = ("page", "offset", "link", "none")
VERSION_CHOICES: tuple[str, ...] = ("8.4", "8.0")
UNAUTHORIZED_STYLE_CHOICES: tuple[str, ...] = ("errors", "errorCode")
DATE_FORMAT_CHOICES: tuple[str, ...] = ("epoch_ms", "iso")
UPDATED_ORDER_CHOICES: tuple[str, ...] = ("random", "id")
LIST_ORDER_CHOICES: tuple[str, ...] = ("id", "dtLastUpdate")
UPDATED_UNIT_CHOICES: tuple[str, ...] = ("ms", "s", "iso", "us", "ns")
#: How a next link is written: a whole URL, a path from the server root (``/api/forms/...?cursor=``), or
#: relative to the request (``instances?cursor=``), as RFC 8288 allows.
LINK_STYLE_CHOICES: tuple[str, ...] = ("absolute", "path", "relative")


def _default_users() -> dict[str, str]:
    return {"JPerez": "JPerez-pass1"}


@dataclass(frozen=True, kw_only=True)
class EmulatorSettings:
    """Everything that shapes the emulator's behaviour; the defaults follow ``deyel-api.md``."""

    # Credentials: the documented example "Rest API Client" user, plus resource-owner accounts.
    client_id: str = "DEYELBOT"
    client_secret: str = "BOTDEYEL312!"
    users: dict[str, str] = field(default_factory=_default_users)
    token_ttl: int = 86400

    # Routes.
    token_path: str = "/oauth/token"
    api_prefix: str = ""

    # The seeded CRM_ACCOUNT form. Its dtLastUpdate values lie in [updated_start_ms, updated_start_ms +
    # records * updated_step_ms): shuffled ("random": edits do not follow creation order, as on a live form)
    # or growing with the id ("id"); ``updated_burst`` instances share each value, as a bulk import makes.
    records: int = 1000
    seed: int = 42
    updated_start_ms: int = 1767225600000
    updated_step_ms: int = 60_000
    updated_order: UpdatedOrder = "random"
    updated_burst: int = 1

    # Paging.
    paging: Paging = "page"
    page_param: str = "page"
    page_size_param: str = "pageSize"
    offset_param: str = "offset"
    limit_param: str = "limit"
    cursor_param: str = "cursor"
    page_size_default: int = 100
    page_size_max: int = 1000
    total_header: str = "X-Total-Count"
    # Listing order of the collection, and servers that page differently than assumed.
    list_order: ListOrder = "id"
    link_style: str = "absolute"
    send_total: bool = True
    total_ignores_search: bool = False  # the total header counts the whole form, not the search
    total_counts_page: bool = False  # the total header counts the instances of the page sent
    unstable_order: bool = False  # every request lists the matches in a new order (ties of a bad ORDER BY)
    ignore_page_param: bool = False  # every page/offset/cursor asks for the first page
    ignore_page_size: bool = False  # every page holds page_size_default instances, whatever is asked
    ignore_search: bool = False  # the search parameter is accepted and ignored: every instance matches
    # Permissions applied per page (issue 20): the server pages the matches, then removes this share of each
    # page's instances (the same ones every time, drawn from ``seed``), so a page is shorter than asked while
    # more follow. The total header still counts the matches before the removal.
    drop_after_paging: float = 0.0

    # Another user editing the seeded form while clients read it: before each listing request, about this
    # many instances are edited (dtLastUpdate moves to now), inserted and deleted, drawn from writer_seed.
    writer_edits: float = 0.0
    writer_inserts: float = 0.0
    writer_deletes: float = 0.0
    writer_seed: int = 0

    # The HTTP Date header's clock against the clock that stamps dtLastUpdate (a skewed proxy or web
    # server in front of Deyel): ahead by more than a second, incremental runs can miss changes.
    date_offset_ms: int = 0
    # A save's stamp is taken when its transaction starts and the save is seen by listings and reads only
    # when it commits, this many ms later (on the emulator's clock): a window read in between misses it
    # unless its end is older than the lag. 0: every save is visible at once.
    commit_lag_ms: int = 0

    latency_ms: float = 0
    version: Version = "8.4"

    # Status codes and bodies that the docs leave open.
    token_error_status: int = 401
    bad_grant_status: int = 400
    unauthorized_style: UnauthorizedStyle = "errors"
    in_separator: str = ";"
    date_format: DateFormat = "epoch_ms"
    stale_status: int = 409

    # Writes to a form with a schema (emulator/forms.py) missing a required field or holding a value of the
    # wrong type are refused with 400 and one Deyel error per field.
    validate_writes: bool = True
    # The longest request target (path and query) served; a longer one gets 414 (None: no limit). Deyel
    # documents none; Tomcat's default header limit is 8 KiB.
    max_url_length: int | None = None

    # Rate limiting of data requests (None: unlimited).
    rate_limit: int | None = None
    rate_window: float = 1.0
    rate_limit_status: int = 403
    rate_retry_after: int = 1

    # Forms that exist from the start with no instance (comma-separated): a workflow form whose instances the
    # approval example creates and a sensor waits on; any other form exists once a POST creates it.
    empty_forms: str = "PURCHASE_REQUEST"

    # Keys Deyel does not document (issue 20): the key holding an instance's id in listings and single reads
    # (also the name a search filters the id on); ``id_in_links_only`` sends the id only in the instance's
    # self link href. ``updated_unit``: dtLastUpdate as epoch milliseconds (assumed), epoch seconds, or ISO
    # 8601 text; in seconds, a search's epoch literal for it is read in seconds too.
    # (Review R2) ``us``/``ns``: epoch micro- or nanoseconds, a search's epoch literal read in that unit.
    id_key: str = "idObjectValue"
    id_in_links_only: bool = False
    updated_unit: UpdatedUnit = "ms"

    def __post_init__(self) -> None:
        problems = []
        if self.paging not in PAGING_CHOICES:
            problems.append(f"paging must be one of {PAGING_CHOICES}")
        if self.version not in VERSION_CHOICES:
            problems.append(f"version must be one of {VERSION_CHOICES}")
        if self.unauthorized_style not in UNAUTHORIZED_STYLE_CHOICES:
            problems.append(f"unauthorized_style must be one of {UNAUTHORIZED_STYLE_CHOICES}")
        if self.updated_order not in UPDATED_ORDER_CHOICES:
            problems.append(f"updated_order must be one of {UPDATED_ORDER_CHOICES}")
        if self.link_style not in LINK_STYLE_CHOICES:
            problems.append(f"link_style must be one of {LINK_STYLE_CHOICES}")
        if self.list_order not in LIST_ORDER_CHOICES:
            problems.append(f"list_order must be one of {LIST_ORDER_CHOICES}")
        if self.commit_lag_ms < 0:
            problems.append("commit_lag_ms must be >= 0")
        if self.updated_burst < 1:
            problems.append("updated_burst must be >= 1")
        if min(self.writer_edits, self.writer_inserts, self.writer_deletes) < 0:
            problems.append("writer rates must be >= 0")
        if not 0 <= self.drop_after_paging < 1:
            problems.append("drop_after_paging must be >= 0 and < 1")
        if self.date_format not in DATE_FORMAT_CHOICES:
            problems.append(f"date_format must be one of {DATE_FORMAT_CHOICES}")
        if self.rate_limit_status not in (403, 429):
            problems.append("rate_limit_status must be 403 or 429")
        if self.records < 0:
            problems.append("records must be >= 0")
        # A zero step would make dtLastUpdate constant and the range arithmetic meaningless.
        if self.updated_step_ms < 1:
            problems.append("updated_step_ms must be >= 1")
        if self.page_size_default < 1 or self.page_size_max < 1:
            problems.append("page sizes must be >= 1")
        if self.token_ttl < 1:
            problems.append("token_ttl must be >= 1")
        if not self.in_separator:
            problems.append("in_separator must not be empty")
        if self.max_url_length is not None and self.max_url_length < 16:
            problems.append("max_url_length must be >= 16")
        if self.rate_limit is not None and (self.rate_limit < 0 or self.rate_window <= 0):
            problems.append("rate_limit must be >= 0 and rate_window > 0")
        for name in ("token_path", "api_prefix"):
            value = getattr(self, name)
            if value and (not value.startswith("/") or value.endswith("/")):
                problems.append(f"{name} must start with '/' and not end with '/'")
        if not self.token_path:
            problems.append("token_path must not be empty")
        if (
            not self.id_key
            or any(c in self.id_key for c in ",=:/ ")
            or self.id_key in ("links", "dtLastUpdate")
        ):
            problems.append("id_key must be a plain key name (not links or dtLastUpdate)")
        if self.updated_unit not in UPDATED_UNIT_CHOICES:
            problems.append(f"updated_unit must be one of {UPDATED_UNIT_CHOICES}")
        if problems:
            raise ValueError("; ".join(problems))

    def replace(self, **overrides: Any) -> EmulatorSettings:
        """Return a copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **overrides)
