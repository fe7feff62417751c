"""The extraction engine's spec objects: options refused when a spec is built (naming the option), the old
keyword call kept behind a deprecation, the workers setting checked once (the engines' shape, module size,
parameters and loggers: test_layout.py, tree-wide)."""

from __future__ import annotations

import importlib
import warnings

import pytest

from deyel_provider.exceptions import DeyelConfigError
from deyel_provider.extract.progress import Progress
from deyel_provider.extract.run import extract
from deyel_provider.extract.spec import OutputSpec, ReadSpec, WindowSpec
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.http.concurrency import Workers
from deyel_provider.operators.extract import DeyelExtractOperator
from deyel_provider.read.slicing import SliceSettings

ENGINES = ("read", "extract")
COLUMNS = ["idObjectValue", "dsCompany"]
FORM = "CRM_ACCOUNT"


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"format": "xml"}, "format must be one of"),
        ({"format": "csv", "compression": "snappy"}, "compression for format='csv'"),
        ({"on_empty": "never"}, "on_empty must be one of"),
        ({"max_file_bytes": 0}, "max_file_bytes must be a positive"),
        ({"max_columns": True}, "max_columns must be a positive"),
        ({"schema": {"qtEmployee": "int64"}}, "schema declares Parquet column types"),
        ({"format": "parquet", "schema": {"qtEmployee": "decimal"}}, "qtEmployee"),
        ({"row_group_bytes": 1024}, "row_group_bytes applies to format='parquet' only"),
    ],
)
def test_an_output_spec_refuses_a_bad_option_when_built_naming_it(options, named):
    with pytest.raises(DeyelConfigError, match=named):
        OutputSpec("/tmp/never-written.jsonl", **options)  # noqa: S108 - nothing is written


def test_the_other_specs_refuse_their_bad_values_when_built():
    with pytest.raises(DeyelConfigError, match="progress_interval must be > 0 seconds"):
        Progress(0)
    with pytest.raises(DeyelConfigError, match="incremental field must be a field identifier"):
        SliceSettings(field="dt,x")
    with pytest.raises(DeyelConfigError, match="'id_field' extra names the incremental field"):
        SliceSettings(field="dtLastUpdate", id_field="dtLastUpdate")
    with pytest.raises(DeyelConfigError, match="date_literal must be one of"):
        SliceSettings(date_literal="rfc2822")


def test_the_old_keyword_call_still_works_and_warns(deyel_conn, tmp_path):
    """Users of ``deyel_provider.extraction.extract(hook, form, output, **options)`` keep their call for one
    minor release: the same file and summary as the spec call, and a DeprecationWarning naming the new one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the module's own, on first import
        old_path = importlib.import_module("deyel_provider.extraction")
    old_target, new_target = tmp_path / "old.csv", tmp_path / "new.csv"
    with pytest.warns(DeprecationWarning, match=r"call deyel_provider\.extract\.run\.extract"):
        old = old_path.extract(
            DeyelHook(), "CRM_ACCOUNT", str(old_target), format="csv", page_size=10, start=0, fields=COLUMNS
        )
    new = extract(
        DeyelHook(),
        ReadSpec("CRM_ACCOUNT", page_size=10),
        OutputSpec(str(new_target), format="csv", fields=COLUMNS),
        WindowSpec(start=0),
    )
    assert old_target.read_bytes() == new_target.read_bytes()
    assert old.records == new.records == 50
    assert (old.slices, old.window_start, old.window_end) == (new.slices, new.window_start, new.window_end)
    with pytest.warns(DeprecationWarning), pytest.raises(DeyelConfigError, match="on_empty must be one of"):
        old_path.extract(DeyelHook(), "CRM_ACCOUNT", str(old_target), on_empty="never")


def test_the_workers_setting_is_checked_once_when_parsed_and_passed_down_as_is(deyel_conn, tmp_path):
    """``max_workers``/``max_workers_ceiling`` are checked in the operator's constructor (the same message as
    ever) into a ``Workers``; the spec, the hook and the ``Concurrency`` take that value as it is."""
    with pytest.raises(DeyelConfigError, match=r"^max_workers_ceiling must be a whole number >= 1, got 0$"):
        DeyelExtractOperator(task_id="x", form=FORM, output=str(tmp_path / "a.jsonl"), max_workers_ceiling=0)
    op = DeyelExtractOperator(
        task_id="x", form=FORM, output=str(tmp_path / "a.jsonl"), max_workers="auto", max_workers_ceiling=3
    )
    assert op.workers == Workers("auto", 3)
    read = ReadSpec(FORM, max_workers=op.workers)
    assert read.workers is op.workers
    reader = DeyelHook().sliced_reader(FORM, max_workers=read.workers)
    assert (reader._concurrency.auto, reader._concurrency.ceiling) == (True, 3)
    # Built by hand (the engine from Python), the spec checks the flat values when it is built.
    with pytest.raises(DeyelConfigError, match="max_workers must be a whole number"):
        ReadSpec(FORM, max_workers=0)
