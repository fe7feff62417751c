"""Where an instance's id is in a listing: the connection's ``id_field`` extra, or the instance's self link.

Deyel documents no key for the id of a listed instance: the project assumes ``idObjectValue`` (the name the
POST answer uses). A server that keys it otherwise (``id``) is read by setting ``id_field``; one that sends
the id only in the hypermedia link of the instance (``links: [{"rel": "self", "href": ".../instances/42"}]``)
by setting it to ``links``: the id is then the last path segment of that href. ``deyel-probe`` says which.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

#: The assumed key (deyel-api.md, [ASSUMED]).
DEFAULT_ID_FIELD = "idObjectValue"
#: The ``id_field`` value meaning "the last segment of the instance's self link".
LINKS = "links"
#: Keys the server owns in an instance whatever the id key: never written back, never compared.
BASE_SERVER_KEYS = frozenset({"idObjectValue", "idObjectName", "dtLastUpdate", "links"})
#: The longest instance id the write-back's key search accepts (characters). Deyel's ids are short decimal
#: numbers (or uuids, 36): a longer one is a broken or hostile answer, refused typed, so a search that keeps
#: the ids it saw (to tell repeats) holds at most this much per instance, not a page's worth each.
MAX_ID_LENGTH = 1024


def instance_id(record: Mapping[str, Any], id_field: str = DEFAULT_ID_FIELD) -> str | None:
    """The instance's id as text, or None when ``record`` holds none where ``id_field`` says."""
    if id_field == LINKS:
        return self_link_id(record.get(LINKS))
    raw = record.get(id_field)
    if isinstance(raw, bool) or not isinstance(raw, (str, int)) or raw == "":
        return None
    return str(raw)


def id_digest(ident: str) -> bytes:
    """16 bytes standing for an id in a set of the ids seen: a listing's repeats are told apart at that cost
    per instance, whatever the ids' length (a server's ids are its text: it could send a page-long one)."""
    return hashlib.blake2b(ident.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def self_link_id(links: Any) -> str | None:
    """The last path segment of the ``self`` link's href (the only link, when none says ``self``)."""
    if not isinstance(links, list):
        return None
    candidates = [link for link in links if isinstance(link, Mapping) and isinstance(link.get("href"), str)]
    chosen = [link for link in candidates if str(link.get("rel", "")).lower() == "self"]
    if not chosen and len(candidates) == 1:
        chosen = candidates
    if len(chosen) != 1:
        return None
    segment = urlsplit(chosen[0]["href"]).path.rstrip("/").rsplit("/", 1)[-1]
    text = unquote(segment)
    return text if text not in ("", ".", "..", "instances") else None


def names_a_segment(ident: str) -> bool:
    """Whether an id can be put in an instance's URL: ``""``, ``.`` and ``..`` (blanks around them
    stripped) survive percent-encoding and would be resolved as dot segments (the collection, its form)."""
    return ident.strip() not in ("", ".", "..")


def server_keys(id_field: str = DEFAULT_ID_FIELD) -> frozenset[str]:
    """The keys a write-back must not compare or send: the server's, the connection's id key included."""
    return BASE_SERVER_KEYS | {id_field}


def missing_id(id_field: str) -> str:
    """Why an instance has no id, and the setting that fixes it (no server text: it may echo anything)."""
    where = "self link in 'links'" if id_field == LINKS else f"'{id_field}'"
    return (
        f"an instance has no {where}: set the connection's 'id_field' extra to the key holding the instance "
        f"id ('links' when only its self link holds it); deyel-probe tells which"
    )


def not_an_id(id_field: str) -> str:
    """Why one response listing the same id twice is refused (no server text: it may echo anything).

    One response is a consistent snapshot: it lists an instance once. Two sharing the key mean the key is
    not an id, and distinct instances would be dropped as repeats (a silent loss), not a server's quirk.
    """
    where = "self link in 'links'" if id_field == LINKS else f"'{id_field}'"
    return (
        f"two instances in one response share their {where}: the connection's 'id_field' extra names "
        f"'{id_field}', a key that is not an instance id (distinct instances would be dropped as repeats); "
        f"set it to the key holding the instance id (idObjectValue, id, or 'links'); deyel-probe tells which"
    )
