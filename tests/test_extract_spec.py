"""The extraction engine's spec objects: options refused when a spec is built (naming the option), the old
keyword call kept behind a deprecation, and the engines' shape (parameters per function, module size)."""

from __future__ import annotations

import ast
import importlib
import warnings
from pathlib import Path

import pytest

from deyel_provider.exceptions import DeyelConfigError
from deyel_provider.extract.progress import Progress
from deyel_provider.extract.run import extract
from deyel_provider.extract.spec import OutputSpec, ReadSpec, WindowSpec
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.read.slicing import SliceSettings

PACKAGE = Path(__file__).resolve().parents[1] / "provider" / "deyel_provider"
ENGINES = ("read", "extract")
COLUMNS = ["idObjectValue", "dsCompany"]


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


def _engine_modules() -> list[Path]:
    return sorted(path for folder in ENGINES for path in (PACKAGE / folder).rglob("*.py"))


def test_no_engine_function_takes_more_than_eight_parameters():
    """Issue 23: the engines take spec objects, not 20 keyword arguments (``self``/``cls`` not counted)."""
    wide = []
    for path in _engine_modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args
                names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
                names += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
                count = len([name for name in names if name not in ("self", "cls")])
                if count > 8:
                    wide.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}() takes {count}")
    assert wide == []
    assert _engine_modules()  # the walk found the engines


def test_no_engine_module_passes_450_lines_nor_takes_a_logger():
    long = [
        f"{path.relative_to(PACKAGE)}: {lines}"
        for path in _engine_modules()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > 450
    ]
    assert long == []
    # Module loggers (which Airflow puts in the task log), or an object's own: no logger argument threads on.
    threaded = []
    for path in _engine_modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            # A constructor may take where its object reports (Progress, the watermark run): one hop.
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name != "__init__":
                args = node.args
                if any(a.arg == "logger" for a in (*args.args, *args.kwonlyargs)):
                    threaded.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}")
    assert threaded == []
