"""deyel-probe against the emulator in each of its modes: each identified, read-only, one token POST."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from deyel_provider.emulator import run_emulator
from deyel_provider.probe import main
from tests.support.airflow_cli import run_airflow
from tests.support.airflow_db import copy_migrated_db
from tests.support.helpers import CLIENT_SECRET, connection_json
from tests.support.servers import StandInServer
from tests.support.warm import run_python

PAGE = {"paging": "page", "page_param": "page", "page_size_param": "pageSize"}
COUNTED = {"total_header": "X-Total-Count"}
KEY_EXTRAS = {"id_field": "idObjectValue", "date_literal": "epoch_ms", "in_separator": ";"}
#: What the ``deyel-probe`` console script runs (its entry point, ``deyel_provider.probe:main``).
DEYEL_PROBE = (
    "import sys\nfrom deyel_provider.probe import main\nsys.argv[0] = 'deyel-probe'\nsys.exit(main())\n"
)


@pytest.fixture
def probe_server(monkeypatch):
    """Start an emulator with the given switches and point ``deyel_default`` (memory cache) at it."""
    started = []

    def start(extra: dict | None = None, **settings):
        settings.setdefault("records", 50)
        context = run_emulator(**settings)
        running = context.__enter__()
        started.append(context)
        body = json.loads(connection_json(running.url, cache="memory", **(extra or {})))
        monkeypatch.setenv("AIRFLOW_CONN_DEYEL_DEFAULT", json.dumps(body))
        return running

    yield start
    for context in started:
        context.__exit__(None, None, None)


def probe_json(capsys, *args: str) -> tuple[int, dict]:
    code = main(["--conn-id", "deyel_default", "--json", *args])
    return code, json.loads(capsys.readouterr().out)


MODES = {
    "page (the assumed default)": (
        {},
        {"api_prefix": "", **PAGE, **COUNTED, "page_size": 100},
    ),
    "page, other names": (
        {"page_param": "pageNumber", "page_size_param": "size", "total_header": "X-Total"},
        {
            "api_prefix": "",
            "paging": "page",
            "page_param": "pageNumber",
            "page_size_param": "size",
            "total_header": "X-Total",
            "page_size": 100,
        },
    ),
    "offset": (
        {"paging": "offset"},
        {
            "api_prefix": "",
            "paging": "offset",
            "offset_param": "offset",
            "limit_param": "limit",
            **COUNTED,
            "page_size": 100,
        },
    ),
    "offset, other names, no total": (
        {"paging": "offset", "offset_param": "start", "limit_param": "max", "send_total": False},
        {
            "api_prefix": "",
            "paging": "offset",
            "offset_param": "start",
            "limit_param": "max",
            "total_header": "none",
            "page_size": 100,
        },
    ),
    "link, absolute": (
        {"paging": "link"},
        {"api_prefix": "", "paging": "link", "page_size_param": "pageSize", **COUNTED, "page_size": 100},
    ),
    "link, relative": (
        {"paging": "link", "link_style": "relative", "api_prefix": "/api"},
        {"api_prefix": "/api", "paging": "link", "page_size_param": "pageSize", **COUNTED, "page_size": 100},
    ),
    "none": (
        {"paging": "none"},
        {"api_prefix": "", "paging": "none", "total_header": "none"},
    ),
    "prefix and page-size cap": (
        {"api_prefix": "/DeyelWeb/api", "page_size_max": 5},
        {"api_prefix": "/DeyelWeb/api", **PAGE, **COUNTED, "page_size": 5},
    ),
    "cap without a total header": (
        {"page_size_max": 7, "send_total": False},
        {"api_prefix": "", **PAGE, "total_header": "none", "page_size": 7},
    ),
    "total ignores the search": (
        {"total_ignores_search": True},
        {"api_prefix": "", **PAGE, "total_header": "none", "page_size": 100},
    ),
    "total counts the page": (
        {"total_counts_page": True},
        {"api_prefix": "", **PAGE, "total_header": "none", "page_size": 100},
    ),
    "page size ignored": (
        {"ignore_page_size": True, "records": 250},
        {"api_prefix": "", "paging": "page", "page_param": "page", **COUNTED, "page_size": 100},
    ),
    "link, total counts the page": (
        {"paging": "link", "total_counts_page": True},
        {
            "api_prefix": "",
            "paging": "link",
            "page_size_param": "pageSize",
            "total_header": "none",
            "page_size": 100,
        },
    ),
    "offset, page size ignored, total counts the page": (
        {"paging": "offset", "ignore_page_size": True, "total_counts_page": True, "records": 250},
        {
            "api_prefix": "",
            "paging": "offset",
            "offset_param": "offset",
            "total_header": "none",
            "page_size": 100,
        },
    ),
    "page size ignored, total counts the page": (
        {"ignore_page_size": True, "total_counts_page": True, "records": 250},
        {"api_prefix": "", "paging": "page", "page_param": "page", "total_header": "none", "page_size": 100},
    ),
}


@pytest.mark.parametrize("settings, expected", MODES.values(), ids=MODES.keys())
def test_identifies_each_mode_read_only_with_one_token(probe_server, capsys, settings, expected):
    emulator = probe_server(**settings)

    code, report = probe_json(capsys)

    assert (code, report["ok"]) == (0, True), report["findings"]
    # The keys' extras (tests/test_keys.py checks them) are the same on every mode: the emulator's defaults.
    assert {k: v for k, v in report["extras"].items() if k not in KEY_EXTRAS} == expected
    assert {k: report["extras"][k] for k in KEY_EXTRAS} == KEY_EXTRAS
    assert emulator.stats()["token_requests"] == 1
    assert set(emulator.methods()) == {"GET"}
    assert report["gets"] == emulator.methods()["GET"]


def test_a_connection_set_as_advised_probes_clean(probe_server, capsys):
    """The printed extras are the ones the provider reads: set them, and nothing is left to change."""
    settings = {"paging": "offset", "offset_param": "start", "limit_param": "max", "page_size_max": 20}
    probe_server(**settings)
    _, first = probe_json(capsys)
    probe_server(extra=first["extras"], **settings)

    main(["--conn-id", "deyel_default"])

    assert "The connection already says so: nothing to change." in capsys.readouterr().out


def test_a_server_that_ignores_the_page_parameter_is_diagnosed(probe_server, capsys):
    probe_server(ignore_page_param=True)

    code, report = probe_json(capsys)

    assert (code, report["ok"], report["extras"]) == (1, False, {})
    paging = [f for f in report["findings"] if f["topic"] == "paging"]
    assert paging[0]["level"] == "FAIL"
    assert "moves past the first page" in paging[0]["text"]


def test_a_prefix_outside_the_candidates_is_found_when_given(probe_server, capsys):
    probe_server(api_prefix="/tenant/rest/v2")

    code, report = probe_json(capsys)
    assert code == 1
    assert "no candidate answered" in " ".join(f["text"] for f in report["findings"])

    code, report = probe_json(capsys, "--prefix", "/tenant/rest/v2")
    assert (code, report["extras"]["api_prefix"]) == (0, "/tenant/rest/v2")


def test_a_missing_form_is_named(probe_server, capsys):
    emulator = probe_server()

    code, report = probe_json(capsys, "--form", "NO_SUCH_FORM")

    assert code == 1
    assert "has no form 'NO_SUCH_FORM'" in report["findings"][1]["text"]
    assert emulator.methods() == {"GET": 1}


def test_refused_credentials_stop_after_the_token_post_without_echoing_the_secret(probe_server, capsys):
    emulator = probe_server(client_secret="another secret")

    code = main(["--conn-id", "deyel_default"])
    out = capsys.readouterr().out

    assert code == 1
    assert "FAIL  token" in out and "Client Secret" in out
    assert CLIENT_SECRET not in out
    assert emulator.stats()["token_requests"] == 1
    assert emulator.methods() == {}


def test_a_server_that_ignores_search_is_diagnosed(probe_server, capsys):
    probe_server(ignore_search=True)

    code, report = probe_json(capsys)

    assert code == 1
    search = [f for f in report["findings"] if f["topic"] == "search"]
    assert search[0]["level"] == "FAIL" and "is ignored" in search[0]["text"]


def test_a_connection_stored_in_the_metadata_database_is_found(
    probe_server, monkeypatch, tmp_path, tmp_path_factory
):
    """Users keep connections in the database; outside a task the SDK alone does not read it."""
    emulator = probe_server(paging="link")
    monkeypatch.delenv("AIRFLOW_CONN_DEYEL_DEFAULT")
    database = copy_migrated_db(tmp_path_factory, tmp_path / "airflow.db")  # as `db migrate` leaves it
    env = {**os.environ, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{database}"}
    # Each command a process of its own (warm children: tests/support/warm.py), the database theirs alone.
    run_airflow(
        ["connections", "add", "deyel_stored", "--conn-type", "deyel", "--conn-host", emulator.url,
         "--conn-login", "DEYELBOT", "--conn-password", CLIENT_SECRET, "--conn-extra", '{"cache": "memory"}'],
        env=env,
    )  # fmt: skip

    done = run_python(
        DEYEL_PROBE, "--conn-id", "deyel_stored", "--json", env=env, timeout=120, airflow_settings=True
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["extras"]["paging"] == "link"


def test_console_script_prints_what_the_readme_shows(probe_server):
    """The installed ``deyel-probe`` command, as users run it, against the README's emulator mode: its output
    is the README's pasted block line for line (the emulator's port aside)."""
    emulator = probe_server(
        records=1000, api_prefix="/DeyelWeb/api", paging="offset", page_size_max=50, total_header="X-Total"
    )
    script = Path(sys.executable).with_name("deyel-probe")

    done = subprocess.run(
        [str(script), "--conn-id", "deyel_default"], capture_output=True, text=True, timeout=120, check=False
    )

    assert done.returncode == 0, done.stderr
    printed = done.stdout.replace(emulator.url, "http://127.0.0.1:45665").splitlines()
    root = Path(__file__).parent.parent
    for page in (root / "README.md", root / "docs" / "probe.md"):
        text = page.read_text()
        block = text.split("<!-- deyel-probe output", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
        command, *shown = block.splitlines()
        assert command == "$ deyel-probe --conn-id deyel_default", page.name
        assert printed == shown, f"{page.name}: the pasted output has drifted"


def findings(report: dict, topic: str) -> list[dict]:
    return [f for f in report["findings"] if f["topic"] == topic]


def test_fixed_pages_through_an_unknown_page_parameter_are_not_taken_for_no_paging(probe_server, capsys):
    """20 per page whatever size is asked, paged by ``pg``: "none" would read 20 of 50 and succeed."""
    probe_server(page_param="pg", ignore_page_size=True, page_size_default=20)

    code, report = probe_json(capsys)

    assert (code, report["extras"]) == (1, {}), report["findings"]
    paging = findings(report, "paging")[0]
    assert paging["level"] == "FAIL"
    assert "pages of 20" in paging["text"] and "50" in paging["text"]
    assert "--page-param" in " ".join(f["text"] for f in report["findings"])


def test_no_paging_without_a_count_header_is_not_asserted(probe_server, capsys):
    probe_server(paging="none")

    code, report = probe_json(capsys)

    assert code == 0
    paging = findings(report, "paging")[0]
    assert paging["level"] == "warn" and "not proven" in paging["text"]


def test_fixed_size_paging_checks_search_too(probe_server, capsys):
    probe_server(ignore_page_size=True, ignore_search=True, records=250)

    code, report = probe_json(capsys)

    assert code == 1
    assert [f["level"] for f in findings(report, "search")] == ["FAIL"]


def test_an_oversized_answer_is_a_diagnosis_not_a_traceback(probe_server, capsys):
    probe_server(extra={"max_response_bytes": 4000})

    code, report = probe_json(capsys)

    assert (code, report["ok"]) == (1, False)
    assert "max_response_bytes" in findings(report, "stopped")[0]["text"]


def test_an_internal_error_exits_3_with_a_one_line_diagnosis(probe_server, capsys, monkeypatch):
    import requests

    probe_server()

    def broken(*args, **kwargs):
        raise RuntimeError("something unforeseen")

    monkeypatch.setattr(requests.Session, "get", broken)
    code = main(["--conn-id", "deyel_default", "--json"])
    captured = capsys.readouterr()

    assert code == 3
    error = "internal error: RuntimeError: something unforeseen"
    assert json.loads(captured.out) == {"ok": False, "error": error}
    assert captured.err.strip().splitlines()[-1].startswith("deyel-probe: internal error: RuntimeError")


@pytest.mark.parametrize(
    "raised, code, said",
    [
        (KeyboardInterrupt(), 130, "interrupted"),
        (SystemExit(1), 2, "Airflow exited while loading (exit code 1)"),
    ],
)
def test_an_interruption_or_an_exit_while_probing_is_an_exit_code(monkeypatch, capsys, raised, code, said):
    from deyel_provider.probe import cli

    def stopped(*args):
        raise raised

    monkeypatch.setattr(cli, "_probe", stopped)

    assert main(["--conn-id", "deyel_default", "--json"]) == code
    assert json.loads(capsys.readouterr().out) == {"ok": False, "error": said}


def test_an_error_that_cannot_be_printed_is_still_one_line(monkeypatch, capsys):
    from deyel_provider.probe import cli

    class Unprintable(Exception):
        def __str__(self):
            raise ValueError("no")

    def broken(*args):
        raise Unprintable

    monkeypatch.setattr(cli, "_probe", broken)

    assert main(["--conn-id", "deyel_default"]) == 3
    assert "internal error: Unprintable" in capsys.readouterr().err


def test_a_failing_flush_still_gives_stdout_back(monkeypatch):
    """A closed pipe (BrokenPipeError on flush) must not leave file descriptor 1 on stderr."""
    import io

    from deyel_provider.probe import cli

    class ClosedPipe(io.StringIO):
        def flush(self):
            raise BrokenPipeError

    before = os.fstat(1)
    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    with cli._stdout_is_stderr():
        assert os.path.sameopenfile(1, 2)
    after = os.fstat(1)

    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)


@pytest.mark.parametrize("size", ["-5", "0", "many"])
def test_page_size_must_be_a_positive_integer(capsys, size):
    with pytest.raises(SystemExit) as exit_:
        main(["--conn-id", "deyel_default", "--page-size", size])

    assert exit_.value.code == 2
    assert "--page-size" in capsys.readouterr().err


def test_an_unreadable_connection_is_reported_in_json_without_the_secret(capsys, monkeypatch):
    body = json.loads(connection_json("http://127.0.0.1:9", paging="sideways"))
    monkeypatch.setenv("AIRFLOW_CONN_DEYEL_DEFAULT", json.dumps(body))

    code, report = probe_json(capsys)

    assert (code, report["ok"]) == (2, False)
    assert "paging" in report["error"]
    assert CLIENT_SECRET not in json.dumps(report)


def test_a_count_header_of_the_page_is_not_taken_for_the_total_on_link_servers(probe_server, capsys):
    probe_server(paging="link", total_counts_page=True)

    code, report = probe_json(capsys)

    assert (code, report["extras"]["total_header"]) == (0, "none")
    assert [f["level"] for f in findings(report, "total")] == ["warn"], report["findings"]


class OddServer(StandInServer):
    """What the emulator does not do: a Deyel-like server paging by ``page``/``pageSize`` from ``base``,
    with a page-size ``cap``, a count header that may lie (``total``; "page": it counts the page sent), and
    a Link header (``link``: a URL template with ``{page}`` and ``{size}``, absolute or not). ``fixed``:
    every page holds that many, whatever size is asked; ``offset``: the name of a parameter read as a record
    offset (0-based) instead of ``page``; ``refuse``: a test on the query, true for requests answered 400
    with a Deyel error. ``seen``: each request's path and Authorization."""

    def __init__(self, records: int = 50, base: int = 1, cap: int = 1000, total: int | str | None = None,
                 link: str = "", fixed: int | None = None, offset: str = "",
                 refuse: Callable[[dict[str, str]], bool] | None = None) -> None:  # fmt: skip
        super().__init__(("127.0.0.1", 0), _OddHandler)
        self.rows = [{"idObjectValue": str(i), "dsName": f"account {i}"} for i in range(1, records + 1)]
        self.base, self.cap, self.total, self.link = base, cap, total, link
        self.fixed, self.offset, self.refuse = fixed, offset, refuse
        self.seen: list[tuple[str, str, str]] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _OddHandler(BaseHTTPRequestHandler):
    server: OddServer

    def log_message(self, *args):
        pass

    def _send(self, body, headers=(), status=200):
        data = json.dumps(body).encode()
        self.send_response(status)
        for name, value in [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            *headers,
        ]:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        self.server.seen.append(("POST", self.path, ""))
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._send({"access_token": "odd-token-0123456789", "token_type": "Bearer", "expires_in": 3600})

    def do_GET(self):
        odd = self.server
        odd.seen.append(("GET", self.path, self.headers.get("Authorization", "")))
        query = dict(parse_qsl(urlsplit(self.path).query))
        if odd.refuse is not None and odd.refuse(query):
            self._send({"errorCode": "INVALID_PARAMETER", "message": "out of range"}, status=400)
            return
        rows = odd.rows
        if "search" in query:
            name, value = query["search"].split("=eq:")
            rows = [r for r in rows if str(r.get(name)) == value]
        size = odd.fixed or min(int(query.get("pageSize", 100)), odd.cap)
        page = int(query.get("page", odd.base))
        start = int(query.get(odd.offset, 0)) if odd.offset else max(page - odd.base, 0) * size
        sent = rows[start : start + size]
        total = {None: len(rows), "page": len(sent)}.get(odd.total, odd.total)  # type: ignore[call-overload]
        headers = [("X-Total-Count", str(total))]
        if odd.link and start + size < len(rows):
            headers.append(("Link", f'<{odd.link.format(page=page + 1, size=size)}>; rel="next"'))
        self._send(sent, headers)


@pytest.fixture
def odd_server(monkeypatch):
    started: list[OddServer] = []

    def start(**settings) -> OddServer:
        server = OddServer(**settings)
        started.append(server)
        if len(started) == 1:
            body = json.loads(connection_json(server.url, cache="memory"))
            monkeypatch.setenv("AIRFLOW_CONN_DEYEL_DEFAULT", json.dumps(body))
        return server

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


def test_a_next_link_to_another_host_is_a_warning_and_page_paging_is_found(odd_server, capsys):
    server = odd_server(link="")
    elsewhere = odd_server()
    server.link = elsewhere.url + "/forms/CRM_ACCOUNT/instances?page={page}&pageSize={size}"

    code, report = probe_json(capsys)

    assert (code, report["extras"]["paging"]) == (0, "page"), report["findings"]
    assert findings(report, "paging")[0]["level"] == "warn"
    assert "another host" in findings(report, "paging")[0]["text"]
    assert elsewhere.seen == []


def test_a_next_link_that_repeats_the_first_page_is_a_warning_and_page_paging_is_found(odd_server, capsys):
    odd_server(link="/forms/CRM_ACCOUNT/instances?page=1&pageSize={size}")

    code, report = probe_json(capsys)

    assert (code, report["extras"]["paging"]) == (0, "page"), report["findings"]
    assert findings(report, "paging")[0]["level"] == "warn"


def test_a_count_header_that_overstates_the_total_gives_no_page_size_cap(odd_server, capsys):
    odd_server(total=1000)

    code, report = probe_json(capsys)

    assert code == 0, report["findings"]
    assert report["extras"]["page_size"] == 100
    assert report["extras"]["total_header"] == "none"


def test_zero_based_page_numbers_get_their_own_diagnosis(odd_server, capsys):
    odd_server(base=0)

    code, report = probe_json(capsys)

    assert code == 1
    assert "pages are numbered from 0" in findings(report, "paging")[0]["text"]


@pytest.mark.parametrize("cap", [3, 4])
def test_a_small_page_size_cap_is_found(odd_server, capsys, cap):
    odd_server(cap=cap)

    code, report = probe_json(capsys)

    assert (code, report["extras"].get("paging"), report["extras"].get("page_size")) == (0, "page", cap), (
        report["findings"]
    )


def test_a_server_that_ignores_every_size_parameter_is_listed_whole_a_few_times_only(probe_server, capsys):
    """Each such listing is the whole form (up to max_response_bytes): one per question, not one per name."""
    emulator = probe_server(paging="none", records=300)

    code, report = probe_json(capsys)

    assert code == 0
    assert report["extras"]["paging"] == "none"
    # prefix, every size name at once, the listing, every page name at once, every offset name, search; then
    # the keys' searches (probe/keys.py: two date literals, two for the newest stamp, in), none of them a
    # listing of the whole form
    assert emulator.methods()["GET"] == 11


def test_a_refused_look_past_the_first_page_does_not_discredit_the_count_header(odd_server, capsys):
    """A cap of 10, and pages past the 10th refused: page=11&pageSize=1 (is there an 11th instance?) fails.
    Unknown is not "no": taken for "nothing follows", the true count header was called an overstatement and
    page_size set to the 20 asked, so an extraction reads 10, sees a short page, and stops."""
    odd_server(cap=10, refuse=lambda query: int(query.get("page", 1)) > 10)

    code, report = probe_json(capsys, "--page-size", "20")

    assert code == 0, report["findings"]
    assert (report["extras"]["page_size"], report["extras"]["total_header"]) == (10, "X-Total-Count")
    assert any(f["level"] == "warn" and "400" in f["text"] for f in report["findings"]), report["findings"]


def test_a_refused_second_fixed_size_page_does_not_pass_the_form_for_one_page(odd_server, capsys):
    """Pages of 20 whatever is asked, by ``offset``, a count header of the page, and offset=20 refused: that
    is not "the whole form fits in one page", and the header (20) must not be taken for the total."""
    refused = lambda query: int(query.get("offset", 0)) >= 20  # noqa: E731
    odd_server(fixed=20, offset="offset", total="page", refuse=refused)

    code, report = probe_json(capsys)

    assert code == 0, report["findings"]
    extras = report["extras"]
    assert (extras["paging"], extras["page_size"], extras["total_header"]) == ("offset", 20, "none"), extras
    assert any(f["level"] == "warn" and "400" in f["text"] for f in findings(report, "paging"))


def test_an_offset_parameter_among_the_page_names_is_not_taken_for_page_paging(odd_server, capsys):
    """``p`` read as a record offset: p=2&pageSize=2 answers instances 3-4 as page 2 would, but p=1 answers
    2-3; as page paging, an extraction would ask p=1,2,3 by 100 and read overlapping pages."""
    odd_server(offset="p")

    code, report = probe_json(capsys)

    assert report["extras"].get("paging") != "page", report["findings"]
    assert code == 1
    code, report = probe_json(capsys, "--offset-param", "p")
    assert (code, report["extras"]["paging"], report["extras"]["offset_param"]) == (0, "offset", "p"), report


def test_zero_based_fixed_size_pages_are_not_taken_for_one_based(odd_server, capsys):
    """Pages of 20 whatever is asked, numbered from 0: page=2 is the third page; taken for the second, an
    extraction would skip page 0."""
    odd_server(fixed=20, base=0)

    code, report = probe_json(capsys)

    assert (code, report["extras"]) == (1, {}), report["findings"]
    assert "numbered from 0" in findings(report, "paging")[0]["text"]


# -- issue 20: whether short pages can be trusted ------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "level", "said"),
    [
        ({}, "ok", "the first 4 pages of 10 came back full"),
        ({"records": 25}, "ok", "page 3 held 5 of 10 asked and nothing followed"),
        ({"page_size_max": 7, "send_total": False}, "ok", "the first 4 pages of 7 came back full"),
        ({"drop_after_paging": 0.3, "records": 200}, "warn", "more instances followed"),
        ({"drop_after_paging": 0.3, "records": 200, "paging": "offset"}, "warn", "more instances followed"),
    ],
    ids=["whole pages", "the form's end", "a cap", "shortened after paging", "shortened, offset paging"],
)
def test_the_probe_says_whether_short_pages_can_be_trusted(probe_server, capsys, settings, level, said):
    probe_server(**settings)
    code, report = probe_json(capsys)
    (short,) = findings(report, "short page")
    assert (code, short["level"]) == (0, level), report["findings"]
    assert said in short["text"]
    if level == "warn":
        assert "its short pages cannot be trusted" in short["text"]


def test_a_stand_in_server_whose_pages_come_back_short_is_reported(odd_server, capsys):
    """The stand-in (not the emulator) pages 50 rows by page/pageSize and caps pages at 3: pages of 3 are
    whole, the last one (2 of 3) ends the form; nothing suggests shortened pages."""
    odd_server(records=11, cap=3)
    _, report = probe_json(capsys)
    (short,) = findings(report, "short page")
    assert short["level"] == "ok" and "nothing followed" in short["text"], report["findings"]


class Trickler:
    """A stand-in server on raw sockets that answers every request a byte at a time, one byte per 0.2 s,
    for hours: its status line and headers (``where="head"``) or, after a whole head, its body. Each byte
    comes well within the connection's read ``timeout``, so only a total deadline ends the wait."""

    def __init__(self, where: str) -> None:
        import socket

        self.where = where
        self.requests = 0
        self.stop = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
        with conn:
            conn.recv(65536)  # the request (small: a token POST)
            self.requests += 1
            if self.where == "body":
                conn.sendall(head + b"{")
            # A header line under http.client's 64 KiB limit: hours of status line and headers.
            drip = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 60000 if self.where == "head" else b" " * 100000
            for byte in drip:
                if self.stop.wait(0.2):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    def close(self) -> None:
        self.stop.set()
        self.listener.close()


@pytest.mark.parametrize("where", ["head", "body"])
def test_a_trickling_server_ends_at_the_run_deadline_with_its_exit_code(tmp_path, where):
    """Finding 6 of issue 22: with ``timeout`` 3 s, a server sending a byte every 0.2 s kept the probe
    running for good. The run's deadline ends it, wherever the bytes trickle, with its own exit code and a
    line saying which option to raise. (The child is killed at 120 s: the test cannot hang.)"""
    import time

    server = Trickler(where)
    env = {
        **os.environ,
        "AIRFLOW_CONN_DEYEL_DEFAULT": connection_json(server.url, cache="memory", timeout=3),
    }
    script = Path(sys.executable).with_name("deyel-probe")
    started = time.monotonic()
    try:
        done = subprocess.run(
            [str(script), "--conn-id", "deyel_default", "--json", "--deadline", "3"],
            capture_output=True, text=True, timeout=120, check=False, env=env,
        )  # fmt: skip
    finally:
        server.close()
    took = time.monotonic() - started

    assert done.returncode == 4, done.stderr
    said = "the probe did not finish within --deadline 3 s"
    assert said in done.stderr
    assert said in json.loads(done.stdout)["error"]
    assert server.requests == 1  # the deadline ended the token POST itself
    # 3 s plus the interpreter's and Airflow's start on a loaded 2-core machine; without the deadline the
    # probe would still be reading at the child's 120 s kill.
    assert took < 45, took
