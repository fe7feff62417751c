"""The Deyel connection form in a real browser: Debian's Chromium, headless, driven by Playwright.

A user's path through the Airflow 3 UI: sign in, Admin > Connections > Add, choose "Deyel", fill the form,
save, press the row's Test button; then change the secret to a wrong one and test again. Screenshots go to
``artifacts/e2e/`` (the filled form is the picture in docs/connection.md, ``docs/connection-form.png``).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from deyel_provider.connection.fields import ADVANCED_SECTION, EXTRA_FIELDS
from deyel_provider.emulator import run_emulator
from tests.e2e.conftest import ARTIFACTS
from tests.support.helpers import CLIENT_ID, CLIENT_SECRET

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CONN_ID = "deyel_browser"
SHOTS = ARTIFACTS / "e2e"


@pytest.fixture(scope="module")
def form_emulator():
    """The server the form's Test button reaches (its own counters, apart from the DAG runs')."""
    with run_emulator(records=10) as running:
        yield running


def expect(target: Any) -> Any:
    """Playwright's ``expect``, imported when a test runs: every xdist worker imports this module to collect
    it, and only the one that runs the e2e tests drives a browser."""
    from playwright.sync_api import expect

    return expect(target)


@pytest.fixture
def page(local_deployment):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(30_000)
            yield page
        finally:
            browser.close()


def sign_in(page: Page, deployment) -> None:
    page.goto(f"{deployment.url}/connections")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(deployment.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/connections")


def press_test(page: Page, expected: str) -> str:
    """Press the connection's Test button and return the toast's text once it holds ``expected``."""
    page.get_by_role("row").filter(has_text=CONN_ID).get_by_role("button", name="Test Connection").click()
    toast = page.locator("[data-scope=toast][data-part=root]").filter(has_text=expected)
    expect(toast).to_be_visible()
    page.wait_for_timeout(500)  # let the toast finish sliding in before a screenshot
    return toast.inner_text()


def test_create_and_test_a_deyel_connection_through_the_form(page, local_deployment, form_emulator):
    sign_in(page, local_deployment)
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Connection ID").fill(CONN_ID)
    dialog.get_by_role("combobox").fill("Deyel")
    page.get_by_role("option", name="Deyel", exact=True).click()

    # The standard fields, relabelled by the provider; the secret is a password input.
    for label in ("Base URL", "Client ID", "Client Secret", "Port"):
        expect(dialog.get_by_label(label, exact=True)).to_be_visible()
    assert dialog.get_by_label("Client Secret", exact=True).get_attribute("type") == "password"
    for label in ("Schema", "Host", "Login", "Password"):
        expect(dialog.get_by_label(label, exact=True)).to_have_count(0)

    # Host without the port, and the Port field: Airflow 3.3.2's Test button sends port 0 for a connection
    # without one, which the API refuses as "another destination" (apache/airflow#73298).
    emulator = urlsplit(form_emulator.url)
    dialog.get_by_label("Base URL", exact=True).fill(f"{emulator.scheme}://{emulator.hostname}")
    dialog.get_by_label("Port", exact=True).fill(str(emulator.port))
    dialog.get_by_label("Client ID", exact=True).fill(CLIENT_ID)
    dialog.get_by_label("Client Secret", exact=True).fill(CLIENT_SECRET)
    dialog.get_by_label("Description").fill(
        "Deyel through the emulator, created in the browser by the e2e test"
    )
    dialog.screenshot(path=str(SHOTS / "connection-form.png"))

    # Every declared option is a labelled field of its own: the common ones under "Extra Fields", the rare
    # ones under "Advanced". A field left empty means the default its description names (the form saves
    # every field, so the provider writes no default into it).
    # The form opens one heading at a time.
    for heading, advanced in (("Extra Fields", False), (ADVANCED_SECTION, True)):
        dialog.get_by_role("button", name=heading, exact=True).click()
        for spec in (spec for spec in EXTRA_FIELDS if spec.advanced == advanced):
            # Labels end with a space (and a "*" when required): match the whole label, not another's prefix.
            exact = re.compile(rf"^\s*{re.escape(spec.label)}\s*\*?\s*$")
            expect(dialog.locator("label").filter(has_text=exact)).to_be_visible()
        if not advanced:
            expect(dialog.locator("[name=element_oauth_path]")).to_have_value("")
            expect(dialog.get_by_text("Empty: /oauth/token.")).to_be_visible()
            dialog.screenshot(path=str(SHOTS / "connection-form-extras.png"))
    dialog.screenshot(path=str(SHOTS / "connection-form-advanced.png"))

    dialog.get_by_role("button", name="Save").click()
    expect(page.get_by_role("row").filter(has_text=CONN_ID)).to_be_visible()
    stored = local_deployment.api().call("GET", f"/connections/{CONN_ID}")
    assert (stored["conn_type"], stored["login"], stored["port"]) == ("deyel", CLIENT_ID, emulator.port)
    extra = json.loads(stored["extra"])
    assert extra.get("oauth_path") is None and extra.get("page_size") is None  # no default written

    before = form_emulator.stats()
    message = press_test(page, "token obtained")
    assert "Connected to" in message and "answered a list of CRM_ACCOUNT instances" in message
    after = form_emulator.stats()
    assert after["token_requests"] == before["token_requests"] + 1
    assert after["api_requests"] == before["api_requests"] + 1  # the GET through the API prefix
    page.screenshot(path=str(SHOTS / "connection-test-success.png"))

    # A wrong secret: the same Test button says what is wrong, in Deyel's words, without the secret.
    page.get_by_role("row").filter(has_text=CONN_ID).get_by_role("button", name="Edit Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Client Secret", exact=True).fill("not-the-secret")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    message = press_test(page, "refused the credentials")
    assert "Invalid client_id" in message and "for a bad Client Secret alike" in message
    assert "not-the-secret" not in message
    assert "[connection '" not in message  # Airflow tests a copy under a random id: never shown
    assert form_emulator.stats()["token_failures"] == 1
    page.screenshot(path=str(SHOTS / "connection-test-failure.png"))

    # A 0 typed in Page size is kept (the number input clamped it to the schema's minimum, 1) and refused by
    # the Test button, saying why.
    page.get_by_role("row").filter(has_text=CONN_ID).get_by_role("button", name="Edit Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Client Secret", exact=True).fill(CLIENT_SECRET)
    dialog.get_by_role("button", name="Extra Fields", exact=True).click()
    page_size = dialog.locator("[name=element_page_size]")
    page_size.fill("0")
    page_size.press("Tab")
    expect(page_size).to_have_value("0")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    assert (
        json.loads(local_deployment.api().call("GET", f"/connections/{CONN_ID}")["extra"])["page_size"] == 0
    )
    press_test(page, "a page of 0 instances reads nothing")
    print(f"emulator counters: {form_emulator.stats()}")  # shown by `make e2e PYTEST_ARGS=-rP`
