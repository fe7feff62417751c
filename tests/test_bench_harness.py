"""The benchmark harness's logic (bench/harness.py) and the extraction table's variants doing the same work.

No timing is asserted: the variants here return fixed measurements, and the extraction variants are checked
for what they send and write, not how fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests

from bench import _extract_child as child
from bench.harness import Column, Table, Variant, fmt, measure, ratio, render, schedule
from deyel_provider.emulator import run_emulator


def _table(**overrides: Any) -> Table:
    fields: dict[str, Any] = {"title": "t", "metric": "rate", "unit": "records/s", "baseline": "base"}
    return Table(**{**fields, **overrides})


class Recorder:
    """Variants that log the order they ran in and return the next value of a fixed sequence."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def variant(self, label: str, values: list[float], fail_at: int | None = None) -> Variant:
        seen = iter(range(len(values) + 10))

        def run() -> dict[str, Any]:
            n = next(seen)
            self.calls.append(label)
            if fail_at is not None and n == fail_at:
                raise ConnectionError(f"{label} broke\n  in round {n}")
            return {"rate": values[n], "requests": 100 + n % 2}

        return Variant(label, run)


def test_schedule_rotates_the_order_each_round():
    assert schedule(3, 4) == [[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 1, 2]]
    # Over as many rounds as variants, each variant runs first once and last once.
    rounds = schedule(4, 4)
    assert sorted(order[0] for order in rounds) == [0, 1, 2, 3]
    assert sorted(order[-1] for order in rounds) == [0, 1, 2, 3]
    assert schedule(0, 2) == [[], []]


def test_variants_run_interleaved_round_robin():
    recorder = Recorder()
    variants = [recorder.variant(x, [1.0] * 3) for x in ("base", "a", "b")]
    measure(_table(), variants, n_rounds=3)
    assert recorder.calls == ["base", "a", "b", "a", "b", "base", "b", "base", "a"]


def test_median_spread_and_ratio_of_medians():
    recorder = Recorder()
    variants = [
        recorder.variant(
            "base", [10.0, 30.0, 20.0, 1000.0, 25.0]
        ),  # median 25 (the outlier does not move it)
        recorder.variant("ours", [40.0, 50.0, 60.0, 55.0, 45.0]),  # median 50
    ]
    rows = measure(_table(), variants, n_rounds=5)
    assert rows[0].median("rate") == 25.0
    assert rows[1].median("rate") == 50.0
    assert ratio(rows, "ours", "base", "rate") == pytest.approx(2.0)
    text = render(_table(columns=[Column("requests", "requests", "exact")]), rows, n_rounds=5)
    assert "| ours | 50.0 | 40.0-60.0 | 2.00x | 100-101 |" in text
    assert "| base | 25.0 | 10.0-1,000 | 1.00x | 100-101 |" in text
    assert "records/s (median of 5)" in text


def test_a_failing_variant_is_a_failed_row_and_the_baseline_stays():
    recorder = Recorder()
    variants = [
        recorder.variant("first", [90.0] * 3, fail_at=1),
        recorder.variant("base", [10.0] * 3),
        recorder.variant("ours", [20.0] * 3),
    ]
    table = _table()
    rows = measure(table, variants, n_rounds=3)
    # It ran until it failed and never again.
    assert recorder.calls.count("first") == 2
    assert rows[0].failed == "ConnectionError: first broke in round 1"
    assert not rows[0].ok
    assert ratio(rows, "ours", "base", "rate") == pytest.approx(2.0)
    text = render(table, rows, n_rounds=3)
    assert "| first | failed: ConnectionError: first broke in round 1 |" in text
    assert "| ours | 20.0 | 20.0-20.0 | 2.00x |" in text


def test_when_the_baseline_fails_every_ratio_is_n_a():
    recorder = Recorder()
    variants = [recorder.variant("base", [10.0] * 3, fail_at=0), recorder.variant("ours", [20.0] * 3)]
    table = _table(references=["ours"])
    rows = measure(table, variants, n_rounds=3)
    text = render(table, rows, n_rounds=3)
    # No other row becomes the baseline: the ratio to the baseline is n/a, the one to "ours" still holds.
    assert "| ours | 20.0 | 20.0-20.0 | n/a | 1.00x |" in text
    assert "1.00x | 1.00x" not in text
    assert ratio(rows, "ours", "base", "rate") is None


def test_a_measurement_without_the_metric_fails_its_row():
    rows = measure(_table(), [Variant("base", lambda: {"other": 1})], n_rounds=2)
    assert rows[0].failed is not None
    assert "no 'rate'" in rows[0].failed


def test_skipped_rows_say_why_and_never_run():
    ran: list[str] = []

    def never() -> dict[str, Any]:
        ran.append("redis")
        return {"rate": 1.0}

    variants = [Variant("base", lambda: {"rate": 5.0}), Variant("redis", never, skip="no redis-server")]
    table = _table()
    rows = measure(table, variants, n_rounds=4)
    assert ran == []
    assert "| redis | skipped: no redis-server |" in render(table, rows, n_rounds=4)


def test_a_baseline_that_is_not_a_variant_is_refused():
    with pytest.raises(ValueError, match="baseline"):
        measure(_table(baseline="missing"), [Variant("base", lambda: {"rate": 1.0})], n_rounds=1)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (23_050.4, "23,100"),
        (148.2, "148"),
        (11.37, "11.4"),
        (0.8934, "0.893"),
        (1.0, "1.00"),
        (99.96, "100"),
        (0, "0"),
        (None, "n/a"),
        (1_234_567, "1,230,000"),
    ],
)
def test_three_significant_digits(value, text):
    assert fmt(value) == text


# The extraction table's variants: the same paging (offsets), the same output, one parse per page.


@pytest.fixture
def offset_emulator():
    with run_emulator(records=2500, paging="offset") as emulator:
        yield emulator


@pytest.fixture
def json_parses(monkeypatch):
    """Counts requests' Response.json calls (a third-party method, wrapped, not replaced)."""
    calls: list[str] = []
    original = requests.Response.json

    def counting(self, *args, **kwargs):
        calls.append(self.url)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(requests.Response, "json", counting)
    return calls


def _written(folder: Path) -> list[str]:
    return (folder / "out.jsonl").read_text(encoding="utf-8").splitlines()


def _check_output(lines: list[str]) -> None:
    ids = [json.loads(line)["idObjectValue"] for line in lines]
    assert len(ids) == len(set(ids)) == 2500  # offset paging: every instance once (page numbers would repeat)
    assert all(": " not in line[:40] and not line.startswith(" ") for line in lines)  # compact, not indented


def test_the_raw_loop_pages_by_offset_and_parses_each_page_once(offset_emulator, tmp_path, json_parses):
    options = {"url": offset_emulator.url, "folder": str(tmp_path), "page_size": 1000}
    work = child.raw(options)
    json_parses.clear()  # the token's parse happened before the clock
    assert work() == 2500
    _check_output(_written(tmp_path))
    assert len(json_parses) == 3
    assert all("offset=" in url and "page=" not in url for url in json_parses)
    assert child.EXTRA["requests"] == 3


# The http provider (6.3) calls a deprecated Airflow helper on the response_filter path: theirs, not ours.
@pytest.mark.filterwarnings("ignore:.*operator_helpers.determine_kwargs")
def test_the_httpoperator_paginates_by_offset_parsing_each_page_once(
    offset_emulator, tmp_path, json_parses, monkeypatch
):
    monkeypatch.setenv(
        "AIRFLOW_CONN_DEYEL_HTTP", json.dumps({"conn_type": "http", "host": offset_emulator.url})
    )
    options = {"url": offset_emulator.url, "folder": str(tmp_path), "page_size": 1000}
    work = child.httpop(options)
    json_parses.clear()
    assert work() == 2500
    _check_output(_written(tmp_path))
    assert len(json_parses) == 3  # before: every page parsed twice (in pagination_function and the filter)
    assert len(set(json_parses)) == 3


def test_the_server_limit_downloads_every_page_and_parses_none(offset_emulator, tmp_path, json_parses):
    options = {"url": offset_emulator.url, "folder": str(tmp_path), "page_size": 1000}
    work = child.server_limit(options)
    json_parses.clear()
    offset_emulator.reset()
    assert work() == 2500
    assert json_parses == []
    assert child.EXTRA["requests"] == 3
    assert offset_emulator.stats()["api_requests"] == 3


def test_a_child_reports_its_own_peak_rss_not_its_parents():
    """ru_maxrss survives exec on Linux: a child of a big parent reported the parent's peak as its own."""
    import subprocess
    import sys

    ballast = b"x" * (160 << 20)  # the parent's RSS well past what the child will ever use
    code = "from bench._extract_child import peak_rss_mb; print(peak_rss_mb())"
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert len(ballast) == 160 << 20
    assert float(done.stdout) < 100


# -- bench/fan_out.py -------------------------------------------------------------------------------------


def test_the_fan_out_bench_dags_hold_every_variant_it_triggers():
    from bench.fan_out import DAG_RUNS, DAGS, PARTS
    from tests.support.helpers import dagbag_class

    dagbag = dagbag_class()(dag_folder=str(DAGS))
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == {dag_id for dag_id, _ in DAG_RUNS.values()}
    for dag_id, task_id in DAG_RUNS.values():
        assert task_id in dagbag.dags[dag_id].task_dict, (dag_id, task_id)
    one = {w: dagbag.dags[f"deyel_bench_one_task_{w}"].get_task("extract").max_workers for w in (1, 8)}
    assert one == {1: 1, 8: 8}
    assert PARTS == 8


def test_the_resume_bench_child_extracts_every_instance_in_parts(emulator, deyel_conn, tmp_path, capsys):
    from bench import _resume_child

    folder = tmp_path / "out"
    _resume_child.main({"folder": str(folder), "try_number": 1, "page_size": 10, "max_file_bytes": 5000})
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert json.loads(line) == {"records": 50, "requests": emulator.stats()["api_requests"]}
    manifest = json.loads((folder / "accounts.jsonl.parts.json").read_text())
    assert len(manifest["parts"]) > 1 and manifest["records"] == 50
