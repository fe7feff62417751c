"""JSON codecs on Deyel-shaped pages: the standard library, msgspec and orjson (issue 24, "Faster JSON").

Two jobs the extraction does per instance: parse a response (a JSON array of 1000 instances, as bytes off
the wire) and encode each instance as one compact JSON Lines line (UTF-8, non-ASCII kept, ``,``/``:``
separators). The pages are the emulator's seeded CRM_ACCOUNT instances (accents, quotes, newlines, a grid,
floats, booleans, nulls). A codec that is not installed is a "skipped" row.

    python -m bench --rounds 3 json_codecs
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Callable
from typing import Any

from bench.harness import Column, Measurement, Table, Variant, run_table, sized
from deyel_provider.emulator.records import RecordGenerator

PAGE = 1000


def page_records(count: int = PAGE) -> list[dict[str, Any]]:
    generator = RecordGenerator(
        seed=42, updated_start_ms=1_700_000_000_000, updated_step_ms=997, v80=False, records=count
    )
    return [{"idObjectValue": str(i + 1), **generator.fields(i)} for i in range(count)]


def _timed(work: Callable[[], Any], repeats: int, records: int) -> Measurement:
    work()  # warm: first-call costs (imports, caches) are not the codec's steady rate
    started = time.perf_counter()
    for _ in range(repeats):
        work()
    seconds = time.perf_counter() - started
    return {
        "records_per_s": records * repeats / seconds,
        "us_per_record": 1e6 * seconds / (records * repeats),
    }


def _skip(module: str) -> str | None:
    return None if importlib.util.find_spec(module) else f"{module} not installed"


def parse_table(body: bytes, repeats: int) -> None:
    def stdlib() -> Measurement:
        return _timed(lambda: json.loads(body), repeats, PAGE)

    def stdlib_text() -> Measurement:
        # What requests' Response.json() does: decode the bytes to text, then parse the text.
        return _timed(lambda: json.loads(body.decode("utf-8")), repeats, PAGE)

    def msgspec_decode() -> Measurement:
        import msgspec

        decode = msgspec.json.Decoder().decode
        return _timed(lambda: decode(body), repeats, PAGE)

    def orjson_loads() -> Measurement:
        import orjson

        return _timed(lambda: orjson.loads(body), repeats, PAGE)

    run_table(
        Table(
            f"Parsing a page of {PAGE} instances ({len(body):,} bytes), {repeats} parses per round",
            metric="records_per_s",
            unit="instances/s",
            baseline="json.loads(bytes)",
            columns=[Column("us_per_record", "µs per instance")],
        ),
        [
            Variant("json.loads(bytes)", stdlib),
            Variant("json.loads(text) (requests' .json())", stdlib_text),
            Variant("msgspec.json.Decoder", msgspec_decode, skip=_skip("msgspec")),
            Variant("orjson.loads", orjson_loads, skip=_skip("orjson")),
        ],
    )


def encode_table(records: list[dict[str, Any]], repeats: int) -> None:
    def stdlib() -> Measurement:
        encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
        return _timed(lambda: ("\n".join(map(encode, records)) + "\n").encode("utf-8"), repeats, len(records))

    def msgspec_encode() -> Measurement:
        import msgspec

        encode = msgspec.json.Encoder().encode
        return _timed(lambda: b"\n".join(map(encode, records)) + b"\n", repeats, len(records))

    def msgspec_lines() -> Measurement:
        import msgspec

        encode_lines = msgspec.json.Encoder().encode_lines
        return _timed(lambda: encode_lines(records), repeats, len(records))

    def provider() -> Measurement:
        from deyel_provider.extract.formats.base import json_lines

        return _timed(lambda: json_lines(records), repeats, len(records))

    def orjson_dumps() -> Measurement:
        import orjson

        return _timed(lambda: b"\n".join(map(orjson.dumps, records)) + b"\n", repeats, len(records))

    run_table(
        Table(
            f"Encoding {len(records)} instances as JSON Lines (UTF-8 bytes), {repeats} pages per round",
            metric="records_per_s",
            unit="instances/s",
            baseline="json.JSONEncoder (today)",
            columns=[Column("us_per_record", "µs per instance")],
        ),
        [
            Variant("json.JSONEncoder (today)", stdlib),
            Variant("msgspec Encoder.encode per record", msgspec_encode, skip=_skip("msgspec")),
            Variant("msgspec Encoder.encode_lines", msgspec_lines, skip=_skip("msgspec")),
            Variant("the provider's json_lines (msgspec, same bytes as json)", provider),
            Variant("orjson.dumps per record", orjson_dumps, skip=_skip("orjson")),
        ],
    )


def run() -> None:
    records = page_records()
    body = json.dumps(records, ensure_ascii=False).encode("utf-8")
    repeats = sized(50, 5)
    parse_table(body, repeats)
    encode_table(records, repeats)
