"""What ``airflow providers list`` and the connection form know about this provider."""

from __future__ import annotations

import json
from typing import Any

from deyel_provider import __version__
from deyel_provider.connection.fields import EXTRA_FIELDS

_RELABELING = {"host": "Base URL", "login": "Client ID", "password": "Client Secret"}
_PLACEHOLDERS = {
    "host": "https://tenant.deyel.com",
    "login": "Code of the 'Rest API Client' user",
    "password": "Password of the 'Rest API Client' user",
    "port": "Optional: the port, when the base URL has none",
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
        "relabeling": dict(_RELABELING),
        "placeholders": {**_PLACEHOLDERS, "extra": json.dumps(_EXTRA_HINT)},
    }


PROVIDER_INFO: dict[str, Any] = {
    "package-name": "airflow-provider-deyel",
    "name": "Deyel",
    "description": "Deyel low-code platform: OAuth2 connection, shared tokens, API calls and extractions.",
    "versions": [__version__],
    "connection-types": [
        {
            "connection-type": "deyel",
            "hook-class-name": "deyel_provider.hooks.deyel.DeyelHook",
            "hook-name": "Deyel",
            "ui-field-behaviour": {
                "hidden-fields": ["schema", "extra"],
                "relabeling": _RELABELING,
                "placeholders": _PLACEHOLDERS,
            },
            "conn-fields": {spec.name: spec.conn_field() for spec in EXTRA_FIELDS},
        }
    ],
    "operators": [
        {
            "integration-name": "Deyel",
            "python-modules": [
                "deyel_provider.operators.deletes",
                "deyel_provider.operators.deyel",
                "deyel_provider.operators.extract",
                "deyel_provider.operators.upsert",
            ],
        }
    ],
    "hooks": [{"integration-name": "Deyel", "python-modules": ["deyel_provider.hooks.deyel"]}],
    "sensors": [{"integration-name": "Deyel", "python-modules": ["deyel_provider.sensors.deyel"]}],
    "triggers": [{"integration-name": "Deyel", "python-modules": ["deyel_provider.triggers.deyel"]}],
    "integrations": [
        {
            "integration-name": "Deyel",
            "external-doc-url": "https://deyel.com/doc/",
            "tags": ["software"],
        }
    ],
}
