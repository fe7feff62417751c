"""What ``airflow providers list`` and the connection form know about this provider."""

from __future__ import annotations

from typing import Any

from deyel_provider._version import __version__
from deyel_provider.connection.fields import EXTRA_FIELDS
from deyel_provider.connection.form import PLACEHOLDERS, RELABELING

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
                "relabeling": RELABELING,
                "placeholders": PLACEHOLDERS,
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
