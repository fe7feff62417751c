"""The one place where the connection's ``cache`` extra becomes cache tiers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

from deyel_provider.auth.cache import PROCESS_CACHE, NoTokenCache, TokenCache
from deyel_provider.auth.crypto import CACHE_PURPOSE, TokenSealer
from deyel_provider.auth.masking import mask_everywhere
from deyel_provider.exceptions import DeyelConfigError
from deyel_provider.http.retry import RetryPolicy

if TYPE_CHECKING:
    from deyel_provider.connection.settings import DeyelConfig


def process_tier(config: DeyelConfig) -> TokenCache:
    """The first tier, in front of the shared one, so that a task does not hit disk or Redis per request."""
    return NoTokenCache() if config.cache == "none" else PROCESS_CACHE


def shared_tier(config: DeyelConfig, key: str) -> TokenCache | None:
    """The cache shared with other processes (``file``, ``redis``), or None (``memory``, ``none``)."""
    if config.cache not in ("file", "redis"):
        return None
    sealer = TokenSealer(config.client_secret, key, CACHE_PURPOSE)
    # A process waits for another's renewal as long as that renewal may take, and no longer.
    budget = RetryPolicy.from_config(config).renewal_budget(config.timeout).total
    if config.cache == "file":
        from deyel_provider.auth.file_cache import FileTokenCache, default_cache_dir

        directory = Path(config.cache_dir).expanduser() if config.cache_dir else default_cache_dir()
        return FileTokenCache(directory, sealer, budget)
    from deyel_provider.auth.redis_cache import RedisTokenCache, redis_client

    return RedisTokenCache(
        redis_client(redis_url(config)), sealer, lease=config.cache_lock_lease, budget=budget
    )


def redis_url(config: DeyelConfig) -> str:
    """The ``cache_url`` extra, else a URL built from the Airflow connection ``cache_conn_id``."""
    if config.cache_url:
        url = _escaped_password(config.cache_url)
    else:
        from deyel_provider.compat import BaseHook

        assert config.cache_conn_id  # DeyelConfig checks that one of the two is set
        conn = BaseHook.get_connection(config.cache_conn_id)
        if not conn.host:
            raise DeyelConfigError(
                f"connection {config.cache_conn_id!r} (cache_conn_id) has no Host for Redis"
            )
        extra = conn.extra_dejson
        scheme = "rediss" if str(extra.get("ssl", "")).lower() in ("true", "1") else "redis"
        auth = ""
        if conn.password:
            auth = f"{quote(conn.login or '', safe='')}:{quote(conn.password, safe='')}@"
        url = f"{scheme}://{auth}{conn.host}:{conn.port or 6379}/{extra.get('db', 0)}"
    password = _password(url)
    if password:
        mask_everywhere(password)
        mask_everywhere(unquote(password))
    return url


def _userinfo_split(url: str) -> tuple[str, str, str] | None:
    """(scheme://, user-info, @host...) split at the LAST '@' before the path: a hand-written password may
    hold '#', '/' or '?', which a URL parser would take for the end of the host part."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return None
    userinfo, _, host = rest.rpartition("@")
    return scheme + sep, userinfo, "@" + host


def _password(url: str) -> str | None:
    parts = _userinfo_split(url)
    if parts is None:
        return None
    _, userinfo, _ = parts
    return userinfo.partition(":")[2] or None


def _escaped_password(url: str) -> str:
    """The URL with the characters that end a URL's host part percent-encoded in its password, so that
    redis-py reads the whole password (it unquotes it again)."""
    parts = _userinfo_split(url)
    if parts is None:
        return url
    head, userinfo, tail = parts
    user, colon, password = userinfo.partition(":")
    for char, code in (("/", "%2F"), ("?", "%3F"), ("#", "%23"), ("@", "%40")):
        password = password.replace(char, code)
    return f"{head}{user}{colon}{password}{tail}"
