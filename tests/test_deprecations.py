"""What an upgrading user's code keeps through the regrouping of issue 23 (found by its review): the hook's
``sliced_reader(logger=...)`` and the names the old ``deyel_provider.extraction`` module exported still work,
with a ``DeprecationWarning``. Both fail on the tree the review attacked (bbbf9b2)."""

from __future__ import annotations

import importlib
import logging
import sys
import warnings

import pytest

from deyel_provider.hooks.deyel import DeyelHook


def test_the_hooks_sliced_reader_takes_the_old_logger_keyword_with_a_warning(deyel_conn):
    with pytest.warns(DeprecationWarning, match=r"sliced_reader\(logger=\.\.\.\) is deprecated"):
        reader = DeyelHook().sliced_reader("CRM_ACCOUNT", logger=logging.getLogger("caller"))
    records = [record for piece in reader.read(None, None) for record in piece.records]
    assert len(records) == 50


@pytest.mark.parametrize(
    ("name", "home"),
    [
        ("epoch_ms", "deyel_provider.extract.run"),
        ("check_output_options", "deyel_provider.extract.spec"),
        ("ON_EMPTY", "deyel_provider.extract.spec"),
        ("as_storage_path", "deyel_provider.storage.paths"),
        ("FORMATS", "deyel_provider.extract.formats.base"),
        ("make_writer", "deyel_provider.extract.formats.writers"),
    ],
)
def test_the_old_extraction_module_still_exports_its_public_names(name, home):
    sys.modules.pop("deyel_provider.extraction", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = importlib.import_module("deyel_provider.extraction")
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)
    assert getattr(old, name) is getattr(importlib.import_module(home), name)
    sys.modules.pop("deyel_provider.extraction", None)
