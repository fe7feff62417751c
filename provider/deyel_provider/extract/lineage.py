"""OpenLineage facets of the provider's operators, built only when ``apache-airflow-providers-openlineage``
is installed (its listener is what calls the operators' ``get_openlineage_facets_on_*``; nothing here is
imported otherwise). They are built from plain values the operators pass (base URL, form or endpoint, the
output's path, the window read), so this module imports no operator.

Datasets:

- a Deyel form: namespace ``deyel://<host>[:<port>]`` of the connection's base URL, name ``forms/<FORM>``;
  any other endpoint is named by its path (``DeyelOperator`` reports ``GET``/``HEAD`` calls as inputs, other
  methods as outputs);
- a published file: OpenLineage's naming for object storage (``s3://bucket`` + key, ``gs://bucket`` + key),
  and ``file`` + the absolute path for a local file (as Airflow names a ``file://`` Asset), never the
  temporary name it was written under.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from airflow.providers.openlineage.extractors import OperatorLineage

#: ``/forms/<FORM>/instances[/<id>]``: the dataset is the form (an instance is one of its rows).
_FORM_PATH = re.compile(r"/*forms/([^/?#]+)(?:/instances(?:/[^?#]*)?)?/*")
#: Methods that read: their endpoint is an input, any other method's an output.
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


def deyel_namespace(base_url: str) -> str:
    """``deyel://<host>[:<port>]`` of the connection's base URL."""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"deyel://{host}" + (f":{parts.port}" if parts.port else "")


def endpoint_name(endpoint: str) -> str:
    """The dataset an endpoint path stands for: ``forms/<FORM>`` for a form's instances, else the path."""
    path = urlsplit(endpoint).path
    match = _FORM_PATH.fullmatch(path)
    if match:
        return f"forms/{match.group(1)}"
    return path.strip("/")


def file_dataset_name(path: str) -> tuple[str, str]:
    """``(namespace, name)`` of a published file.

    ``ObjectStoragePath`` puts its connection id where a URL's user goes (``s3://aws_default@bucket/key``):
    that is not part of the dataset's name (the same bucket through another connection is the same data).
    """
    parts = urlsplit(path)
    if parts.scheme in ("", "file", "local"):
        return "file", parts.path
    bucket = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{bucket}", parts.path.lstrip("/")


@functools.cache
def _window_facet_class() -> type:
    import attr
    from openlineage.client.generated.base import InputDatasetFacet

    @attr.define
    class DeyelWindowInputDatasetFacet(InputDatasetFacet):
        """What part of the form a run read: the search, the incremental field and its window."""

        mode: str
        field: str | None = attr.field(default=None)
        search: str | None = attr.field(default=None)
        windowStart: str | None = attr.field(default=None)  # OpenLineage's camelCase
        windowEnd: str | None = attr.field(default=None)

        @staticmethod
        def _get_schema() -> str:
            return "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/InputDatasetFacet"

    return DeyelWindowInputDatasetFacet


def _moment(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def extract_lineage(
    base_url: str,
    form: str,
    *,
    planned_output: str | None = None,
    summary: Mapping[str, Any] | None = None,
    columns: Sequence[Mapping[str, Any]] = (),
    field: str | None = None,
    search: str | None = None,
) -> OperatorLineage:
    """The form as input; the published files (or, before the run, the output as named) as outputs.

    :param base_url: the connection's base URL (the namespace of the form).
    :param planned_output: before the run, the output's path when it is known (a single file; the parts'
        names are known once written).
    :param summary: after the run, the operator's summary (mode, window, parts); None before it.
    :param columns: the columns written (``{"name", "type"}``), for the schema facet.
    :param field: the incremental field read; ``search`` the run's search, if any.
    """
    from airflow.providers.common.compat.openlineage.facet import (
        InputDataset,
        OutputDataset,
        OutputStatisticsOutputDatasetFacet,
        SchemaDatasetFacet,
        SchemaDatasetFacetFields,
    )
    from airflow.providers.openlineage.extractors import OperatorLineage

    namespace = deyel_namespace(base_url)
    input_facets: dict[str, Any] = {}
    if summary is not None:
        input_facets["deyelWindow"] = _window_facet_class()(
            mode=summary["mode"],
            field=field,
            search=search,
            windowStart=_moment(summary["window_start"]),
            windowEnd=_moment(summary["window_end"]),
        )
    inputs = [InputDataset(namespace=namespace, name=f"forms/{form}", inputFacets=input_facets)]
    outputs = []
    if summary is None:
        if planned_output is not None:
            out_namespace, name = file_dataset_name(planned_output)
            outputs.append(OutputDataset(namespace=out_namespace, name=name))
    else:
        schema = SchemaDatasetFacet(
            fields=[SchemaDatasetFacetFields(name=c["name"], type=c["type"]) for c in columns]
        )
        for part in summary["parts"]:
            out_namespace, name = file_dataset_name(part["path"])
            facets: dict[str, Any] = {"schema": schema} if columns else {}
            outputs.append(
                OutputDataset(
                    namespace=out_namespace,
                    name=name,
                    facets=facets,
                    outputFacets={
                        "outputStatistics": OutputStatisticsOutputDatasetFacet(
                            rowCount=part["records"], size=part["bytes"], fileCount=1
                        )
                    },
                )
            )
    return OperatorLineage(inputs=inputs, outputs=outputs)


def call_lineage(base_url: str, method: str, endpoint: str) -> OperatorLineage:
    """The endpoint called on the server at ``base_url``, as an input (reading methods) or an output."""
    from airflow.providers.common.compat.openlineage.facet import InputDataset, OutputDataset
    from airflow.providers.openlineage.extractors import OperatorLineage

    namespace = deyel_namespace(base_url)
    name = endpoint_name(endpoint)
    if method.upper() in _READS:
        return OperatorLineage(inputs=[InputDataset(namespace=namespace, name=name)])
    return OperatorLineage(outputs=[OutputDataset(namespace=namespace, name=name)])
