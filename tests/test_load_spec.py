"""The write-back's specs: the operator's flat options grouped, checked once, errors naming the option; and
the engine's shape (parameters, module size) is checked tree-wide in test_layout.py."""

from __future__ import annotations

import pytest

from deyel_provider.exceptions import DeyelConfigError
from deyel_provider.load.spec import LoadSpec, RejectsSpec, SourceSpec, upsert_specs


def test_flat_options_go_to_the_spec_that_owns_them():
    source, load, rejects = upsert_specs(
        "ERP_CUSTOMER",
        "s3://b/c.csv",
        "cdCustomer",
        fields=["cdCustomer", "dsName"],
        batch_size=10,
        max_rejects=3,
        source_format="csv",
        key_type="text",
    )
    assert source == SourceSpec("s3://b/c.csv", source_format="csv")
    assert (load.form, load.key, load.batch_size, load.key_type) == ("ERP_CUSTOMER", "cdCustomer", 10, "text")
    assert load.fields == ("cdCustomer", "dsName") and load.written_fields == ["dsName"]
    assert rejects == RejectsSpec(max_rejects=3)
    with pytest.raises(TypeError, match="unknown load options: \\['batchsize'\\]"):
        upsert_specs("F", [], "cdKey", batchsize=10)


@pytest.mark.parametrize(
    "spec, options, named",
    [
        (LoadSpec, {"form": "F", "key": "k", "mode": "merge"}, "mode must be one of"),
        (LoadSpec, {"form": "F", "key": "a,b"}, "key must name a field"),
        (LoadSpec, {"form": "F", "key": "k", "fields": "dsName"}, "fields must be a list"),
        (LoadSpec, {"form": "F", "key": "k", "batch_size": 1001}, "batch_size must be a whole number"),
        (LoadSpec, {"form": "F", "key": "k", "max_matches_per_key": 1}, "max_matches_per_key must be"),
        (LoadSpec, {"form": "F", "key": "k", "in_separator": ""}, "in_separator must be"),
        (LoadSpec, {"form": "F", "key": "k", "progress_interval": 0}, "progress_interval must be"),
        (LoadSpec, {"form": "F", "key": "k", "key_type": "date"}, "key_type must be one of"),
        (LoadSpec, {"form": "F", "key": "k", "lock_timeout": -1}, "lock_timeout must be"),
        (LoadSpec, {"form": "F", "key": "k", "max_workers": 0}, "max_workers must be"),
        (LoadSpec, {"form": "F", "key": "k", "max_workers_ceiling": 0}, "max_workers_ceiling must be"),
        (RejectsSpec, {"max_rejects": -1}, "max_rejects must be"),
        (SourceSpec, {"source": [], "max_record_bytes": 0}, "max_record_bytes must be"),
        (SourceSpec, {"source": [], "max_record_bytes": 2, "max_batch_bytes": 1}, "must not pass max_batch"),
    ],
)
def test_a_bad_option_is_refused_when_its_spec_is_built_naming_the_option(spec, options, named):
    with pytest.raises(DeyelConfigError, match=named):
        spec(**options)
