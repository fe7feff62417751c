"""Hostile or careless connection values: no secret echoed in a config error, no silent TLS downgrade."""

from __future__ import annotations

import pytest

from deyel_provider.exceptions import DeyelConfigError
from deyel_provider.hooks.deyel import DeyelHook


def test_a_numeric_password_extra_is_not_printed_in_the_error(deyel_conn):
    deyel_conn(extra={"grant_type": "password", "username": "JPerez", "password": 31415926})
    with pytest.raises(DeyelConfigError, match="'password' must be a string") as caught:
        DeyelHook().config  # noqa: B018
    assert "31415926" not in str(caught.value)


def test_verify_false_with_a_ca_bundle_is_a_config_error(deyel_conn, tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    deyel_conn(extra={"verify": False, "ca_bundle": str(bundle)})
    with pytest.raises(DeyelConfigError, match="'verify' is false but 'ca_bundle' is set"):
        DeyelHook().config  # noqa: B018
