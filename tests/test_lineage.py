"""OpenLineage facets of the operators (the OpenLineage provider is installed in the test environment; the
provider package works without it). The events a DAG run emits are in test_example_dags.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC
from urllib.parse import urlsplit

import pyarrow.parquet as pq
from airflow.sdk import ObjectStoragePath

from deyel_provider.extract.lineage import deyel_namespace, endpoint_name, file_dataset_name
from deyel_provider.operators.deyel import DeyelOperator
from deyel_provider.operators.extract import DeyelExtractOperator


def namespace_of(emulator) -> str:
    return f"deyel://127.0.0.1:{urlsplit(emulator.url).port}"


def test_extraction_reports_the_form_read_and_every_part_published(deyel_conn, emulator, tmp_path):
    target = tmp_path / "accounts.parquet"
    task = DeyelExtractOperator(
        task_id="x",
        form="CRM_ACCOUNT",
        output=str(target),
        format="parquet",
        incremental_field=None,
        page_size=5,
        max_file_bytes=1_500,
    )
    start = task.get_openlineage_facets_on_start()
    assert [(d.namespace, d.name) for d in start.inputs] == [(namespace_of(emulator), "forms/CRM_ACCOUNT")]
    assert start.outputs == []  # the parts are named once written

    summary = task.execute({})
    complete = task.get_openlineage_facets_on_complete(None)
    (source,) = complete.inputs
    assert (source.namespace, source.name) == (namespace_of(emulator), "forms/CRM_ACCOUNT")
    window = source.inputFacets["deyelWindow"]
    assert (window.mode, window.field, window.windowStart, window.windowEnd) == ("full", None, None, None)

    assert [(d.namespace, d.name) for d in complete.outputs] == [
        ("file", urlsplit(part["path"]).path) for part in summary["parts"]
    ]
    assert len(complete.outputs) == len(summary["parts"]) > 2
    for output, part in zip(complete.outputs, summary["parts"], strict=True):
        stats = output.outputFacets["outputStatistics"]
        assert (stats.rowCount, stats.size, stats.fileCount) == (part["records"], part["bytes"], 1)
        schema = pq.read_schema(urlsplit(part["path"]).path)
        assert [f.name for f in output.facets["schema"].fields] == schema.names
    fields = {f.name: f.type for f in complete.outputs[0].facets["schema"].fields}
    assert (fields["dtLastUpdate"], fields["qtEmployee"], fields["lsAddress"]) == (
        "timestamp",
        "int64",
        "json",
    )
    assert sum(o.outputFacets["outputStatistics"].rowCount for o in complete.outputs) == 50
    assert not any(".tmp-" in d.name for d in complete.outputs)


def test_an_interval_run_reports_its_window_and_the_file_it_names(deyel_conn, emulator, tmp_path):
    from datetime import datetime

    target = tmp_path / "day.csv"
    task = DeyelExtractOperator(
        task_id="x", form="CRM_ACCOUNT", output=str(target), format="csv", search="cdCountry=eq:AR"
    )
    start = task.get_openlineage_facets_on_start()
    assert [(d.namespace, d.name) for d in start.outputs] == [("file", str(target))]
    begin, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    summary = task.execute({"data_interval_start": begin, "data_interval_end": end})
    complete = task.get_openlineage_facets_on_complete(None)
    window = complete.inputs[0].inputFacets["deyelWindow"]
    assert (window.mode, window.field, window.search) == ("interval", "dtLastUpdate", "cdCountry=eq:AR")
    assert (window.windowStart, window.windowEnd) == (
        "2026-01-01T00:00:00.000+00:00",
        "2026-01-02T00:00:00.000+00:00",
    )
    (output,) = complete.outputs
    assert (output.namespace, output.name) == ("file", str(target))
    assert output.outputFacets["outputStatistics"].rowCount == summary["records"] > 0
    assert [(f.name, f.type) for f in output.facets["schema"].fields][:2] == [
        ("idObjectValue", "string"),
        ("cdInstanceOwner", "string"),
    ]


def test_a_skipped_empty_run_reports_no_output(deyel_conn, emulator, tmp_path):
    from datetime import datetime

    task = DeyelExtractOperator(
        task_id="x", form="CRM_ACCOUNT", output=str(tmp_path / "d.jsonl"), on_empty="skip"
    )
    begin, end = datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 2, tzinfo=UTC)
    task.execute({"data_interval_start": begin, "data_interval_end": end})
    complete = task.get_openlineage_facets_on_complete(None)
    assert complete.outputs == [] and len(complete.inputs) == 1


def test_api_calls_report_their_endpoint_as_input_or_output(deyel_conn, emulator):
    read = DeyelOperator(task_id="r", endpoint="/forms/CRM_ACCOUNT/instances", query_params={"pageSize": 1})
    write = DeyelOperator(task_id="w", method="PATCH", endpoint="/forms/CRM_ACCOUNT/instances/7")
    other = DeyelOperator(task_id="o", endpoint="/processes/approve?x=1")
    namespace = namespace_of(emulator)
    lineage = read.get_openlineage_facets_on_start()
    assert ([(d.namespace, d.name) for d in lineage.inputs], lineage.outputs) == (
        [(namespace, "forms/CRM_ACCOUNT")],
        [],
    )
    lineage = write.get_openlineage_facets_on_complete(None)
    assert (lineage.inputs, [(d.namespace, d.name) for d in lineage.outputs]) == (
        [],
        [(namespace, "forms/CRM_ACCOUNT")],
    )
    assert [d.name for d in other.get_openlineage_facets_on_start().inputs] == ["processes/approve"]
    assert emulator.stats()["api_requests"] == 0  # lineage never calls the server


def test_dataset_names():
    assert deyel_namespace("https://tenant.deyel.com/DeyelWeb/api") == "deyel://tenant.deyel.com"
    assert deyel_namespace("http://[::1]:8080") == "deyel://[::1]:8080"
    assert endpoint_name("forms/CRM_ACCOUNT/instances/") == "forms/CRM_ACCOUNT"
    assert endpoint_name("/forms/CRM_ACCOUNT") == "forms/CRM_ACCOUNT"
    assert endpoint_name("/forms/CRM_ACCOUNT/instances/5?x=1") == "forms/CRM_ACCOUNT"
    assert file_dataset_name("s3://lake/deyel/a.parquet") == ("s3://lake", "deyel/a.parquet")
    assert file_dataset_name("file:///data/a.jsonl") == ("file", "/data/a.jsonl")
    # The storage connection is how the file was reached, not what it is: no user part in the namespace.
    with_conn = ObjectStoragePath("s3://lake/deyel/a.parquet", conn_id="aws_default")
    assert file_dataset_name(str(with_conn)) == ("s3://lake", "deyel/a.parquet")
    assert file_dataset_name("gs://user:pw@lake:443/a.jsonl") == ("gs://lake:443", "a.jsonl")


def test_the_provider_works_without_the_openlineage_provider(deyel_conn, emulator, tmp_path):
    """Importing and running the operators never imports OpenLineage (blocked here as if not installed;
    Airflow's own provider discovery still reads the installed provider's metadata)."""
    script = textwrap.dedent(
        """
        import json, sys

        METADATA = {"airflow.providers.openlineage", "airflow.providers.openlineage.get_provider_info"}

        class Blocked:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "openlineage" or (
                    name.startswith("airflow.providers.openlineage") and name not in METADATA
                ):
                    raise ImportError(f"{name} is not installed")

        sys.meta_path.insert(0, Blocked())
        from deyel_provider.operators.deyel import DeyelOperator
        from deyel_provider.operators.extract import DeyelExtractOperator

        task = DeyelExtractOperator(
            task_id="x", form="CRM_ACCOUNT", output=sys.argv[1], format="parquet", incremental_field=None
        )
        summary = task.execute({})
        DeyelOperator(task_id="c", endpoint="/forms/CRM_ACCOUNT/instances/1").execute({})
        loaded = [m for m in sys.modules if "openlineage" in m and m not in METADATA]
        print(json.dumps({"records": summary["records"], "loaded": loaded}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "a.parquet")],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"records": 50, "loaded": []}
