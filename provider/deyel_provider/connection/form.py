"""How Airflow's connection form shows a Deyel connection: labels and placeholders of the standard fields.

The provider info (Airflow 3.2+, with ``conn-fields``) and the hook's ``get_ui_field_behaviour`` (Airflow 3.0
and 3.1) both read them here, so the two forms cannot drift apart.
"""

from __future__ import annotations

import json
from typing import Any

#: The standard fields under the names Deyel's documentation uses.
RELABELING = {"host": "Base URL", "login": "Client ID", "password": "Client Secret"}
#: The port goes in Port, not in the Base URL: Airflow 3.3.2's Test button answers just "Bad Request" for a
#: stored connection whose Port is empty (apache/airflow#73298; docs/connection.md).
PLACEHOLDERS = {
    "host": "https://tenant.deyel.com (no port here: put it in Port)",
    "login": "Code of the 'Rest API Client' user",
    "password": "Password of the 'Rest API Client' user",
    "port": "443 for https: Airflow 3.3.2's Test button says Bad Request without it",
}
#: The options most connections set, as the Extra placeholder of forms that cannot show ``conn-fields``.
_EXTRA_HINT = {
    "api_prefix": "",
    "paging": "page",
    "page_size": 100,
    "total_header": "X-Total-Count",
    "cache": "file",
}


def legacy_ui_field_behaviour() -> dict[str, Any]:
    """The connection form of Airflow 3.0 and 3.1, which render no ``conn-fields``: the same relabelled
    standard fields, and the Extra box left visible with a JSON example of the options (all of them are
    in the README's table). Those versions read it from the hook, and only when wtforms is installed."""
    return {
        "hidden_fields": ["schema"],
        "relabeling": dict(RELABELING),
        "placeholders": {**PLACEHOLDERS, "extra": json.dumps(_EXTRA_HINT)},
    }
