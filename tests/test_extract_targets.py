"""Where an extraction lands and what it announces: object storage through fsspec, a chosen asset, and an
extraction mapped over several forms (whose asset must be declared when the DAG is parsed)."""

from __future__ import annotations

import csv
import io
import json

import fsspec
import pytest
from airflow.sdk import DAG, Asset, ObjectStoragePath
from airflow.sdk.io import attach

from deyel_provider.exceptions import DeyelConfigError
from deyel_provider.operators.extract import DeyelExtractOperator, default_asset
from tests.support.contract import Before
from tests.support.helpers import outlet_events


def update_order(emulator) -> list[str]:
    updated = Before.of(emulator).updated
    return sorted(updated, key=lambda i: (updated[i], int(i)))


@pytest.fixture
def memory_store():
    """fsspec's in-memory filesystem: a real object store API (no rename; move is copy then delete),
    attached to Airflow's object storage as a provider's filesystem would be."""
    store = fsspec.filesystem("memory")
    attach("memory", fs=store)
    store.store.clear()
    store.pseudo_dirs[:] = [""]
    yield store
    store.store.clear()


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_an_object_store_target_holds_exactly_the_records_and_no_temporary_object(
    deyel_conn, emulator, memory_store, fmt
):
    target = f"memory://lake/deyel/CRM_ACCOUNT/run.{fmt}"
    task = DeyelExtractOperator(
        task_id="x", form="CRM_ACCOUNT", output=target, incremental_field=None, format=fmt
    )
    events = outlet_events()
    for _ in range(2):  # a rerun replaces the object
        summary = task.execute({"outlet_events": events})
    assert memory_store.ls("/lake/deyel/CRM_ACCOUNT", detail=False) == [f"/lake/deyel/CRM_ACCOUNT/run.{fmt}"]
    text = memory_store.cat_file(f"/lake/deyel/CRM_ACCOUNT/run.{fmt}").decode()
    if fmt == "jsonl":
        ids = [json.loads(line)["idObjectValue"] for line in text.splitlines()]
    else:
        ids = [row["idObjectValue"] for row in csv.DictReader(io.StringIO(text, newline=""))]
    assert ids == update_order(emulator)
    assert summary["records"] == 50 and summary["bytes"] == len(text.encode())
    assert summary["path"] == str(ObjectStoragePath(target))  # memory:///lake with universal_pathlib < 0.3
    asset = Asset(target)  # no template in the output: the object itself
    assert task.outlets == [asset] and events[asset].extra == summary


def test_an_object_storage_path_output_is_written_there(deyel_conn, emulator, memory_store):
    target = ObjectStoragePath("memory://lake/accounts.jsonl")
    task = DeyelExtractOperator(task_id="x", form="CRM_ACCOUNT", output=target, incremental_field=None)
    assert task.execute({})["records"] == 50
    assert len(memory_store.cat_file("/lake/accounts.jsonl").decode().splitlines()) == 50


def test_a_chosen_asset_is_the_only_one_announced(deyel_conn, emulator, tmp_path):
    chosen = Asset("deyel-crm-accounts", uri="s3://lake/curated/accounts")
    task = DeyelExtractOperator(
        task_id="x",
        form="CRM_ACCOUNT",
        output=str(tmp_path / "{{ ds }}.jsonl"),
        incremental_field=None,
        asset=chosen,
    )
    assert task.outlets == [chosen]  # not the output's folder as well
    task.output_path = str(tmp_path / "2026-01-01.jsonl")  # as rendered
    events = outlet_events()
    summary = task.execute({"outlet_events": events})
    assert list(events) == [chosen] and events[chosen].extra == summary


def test_a_mapped_extraction_declares_its_asset_when_the_dag_is_parsed(tmp_path):
    """``.partial().expand()`` runs ``__init__`` only at run time: the asset must be declared before."""
    output = str(tmp_path / "{{ task.form }}.jsonl")
    with DAG("mapped_extraction", schedule=None):
        mapped = DeyelExtractOperator.partial(task_id="extract", output=output).expand(
            form=["CRM_ACCOUNT", "CRM_CONTACT"]
        )
    expected = default_asset(output)
    assert expected == Asset(tmp_path.as_uri())
    assert mapped.outlets == [expected]


def test_a_mapped_extraction_with_an_expanded_output_must_name_its_asset(tmp_path):
    with DAG("mapped_outputs", schedule=None):
        with pytest.raises(DeyelConfigError, match=r"pass asset=Asset\(\.\.\.\) to partial\(\)"):
            DeyelExtractOperator.partial(task_id="extract", form="CRM_ACCOUNT").expand(
                output=[str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]
            )
        chosen = Asset(tmp_path.as_uri())
        mapped = DeyelExtractOperator.partial(task_id="named", form="CRM_ACCOUNT", asset=chosen).expand(
            output=[str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]
        )
    assert mapped.outlets == [chosen]


def test_the_scheduler_sees_the_asset_of_a_mapped_extraction(tmp_path):
    """What the DAG processor stores is what the scheduler knows: the mapped task produces the asset, so
    its events are registered and a DAG scheduled on it runs."""
    try:
        from airflow.serialization.serialized_objects import DagSerialization
    except ImportError:  # Airflow 3.0
        from airflow.serialization.serialized_objects import SerializedDAG as DagSerialization

    output = str(tmp_path / "{{ task.form }}.jsonl")
    with DAG("mapped_serialized", schedule=None) as dag:
        DeyelExtractOperator.partial(task_id="extract", output=output).expand(
            form=["CRM_ACCOUNT", "CRM_CONTACT"]
        )
    stored = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    # A mapped task's outlets are kept in their serialized form (encoded dicts).
    assert tmp_path.as_uri() in repr(stored.get_task("extract").outlets)


def test_partial_takes_one_asset_or_a_list_as_outlets(tmp_path):
    extra = Asset("extra-outlet", uri="s3://lake/other")
    with DAG("mapped_outlets", schedule=None):
        single = DeyelExtractOperator.partial(
            task_id="single", output=str(tmp_path / "{{ task.form }}.jsonl"), outlets=extra
        ).expand(form=["CRM_ACCOUNT"])
        listed = DeyelExtractOperator.partial(
            task_id="listed", output=str(tmp_path / "{{ task.form }}.jsonl"), outlets=[extra]
        ).expand(form=["CRM_ACCOUNT"])
    assert single.outlets == listed.outlets == [extra, Asset(tmp_path.as_uri())]
