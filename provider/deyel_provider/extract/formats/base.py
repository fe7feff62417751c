r"""What every output format shares: the writer's frame (parts, files, ``max_file_bytes``) and the checks on
field names and column counts.

Bounded whatever the server sends: a CSV or Parquet output has at most ``max_columns`` distinct columns
(:data:`DEFAULT_MAX_COLUMNS`; a server that sends a new field name per instance would otherwise make every
row as wide as all the names seen, records x names in memory and on disk): past it the run fails with a
:class:`DeyelSchemaError` naming the option, and nothing is published. A field name holding a control
character (C0, DEL, C1: NUL, ESC...) is refused in a CSV header or Parquet column name
(:func:`check_field_name`).
"""

from __future__ import annotations

import json
import struct
from abc import ABC, abstractmethod
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, ClassVar, Protocol

import msgspec

from deyel_provider.exceptions import DeyelBadResponseError, DeyelConfigError, DeyelSchemaError

FORMATS: tuple[str, ...] = ("jsonl", "csv", "parquet")

# One encoder for every record: json.dumps with options builds a new encoder per call.
json_text = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
# ``json_text`` that refuses NaN and the infinities (a ValueError): how a record holding one is told.
_json_finite = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
# For the rare record a UTF-8 file cannot hold as is (a lone surrogate): \uXXXX escapes, still the same JSON.
_json_ascii = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode

# The same text as ``json_text`` (as UTF-8 bytes), about eight times faster (``python -m bench json_codecs``),
# except where the two write a float differently: msgspec writes ``1e16``, ``1e-7`` and ``0.00001`` where
# ``json`` (``repr``) writes ``1e+16``, ``1e-07`` and ``1e-05``, and ``null`` for NaN and the infinities
# (``NaN``, ``Infinity``). Between 1e-4 and 1e16 (and zero) both write the same digits the same way: the
# shortest text that reads back the same float.
_fast_encode = msgspec.json.Encoder().encode
#: A whole page in one call: the per-record calls, not the encoding, were most of the cost.
_fast_encode_lines = msgspec.json.Encoder().encode_lines
#: Types whose JSON text msgspec and ``json`` write alike (compact, non-ASCII kept, big integers too).
_SAME_TEXT = frozenset({str, int, bool, type(None)})
#: MessagePack writes every float as 0xcb and its 8 bytes: the way to see a record's floats at C speed.
_msgpack_encode = msgspec.msgpack.Encoder().encode
_FLOAT64 = struct.Struct(">d")

#: Distinct columns a CSV or Parquet output may have (the ``max_columns`` option): twice what a relational
#: table holds (Oracle 1000, SQL Server 1024 columns), and memory stays bounded at this width (Parquet's
#: row groups shrink to fit ``row_group_bytes``, CSV renders a bounded number of cells at a time).
DEFAULT_MAX_COLUMNS = 2000
#: Control characters (C0, DEL, C1) refused in a field name that becomes a header or column name.
_CONTROL = frozenset(map(chr, [*range(0x20), *range(0x7F, 0xA0)]))


def check_max_columns(max_columns: Any) -> int:
    """``max_columns`` as given, or a config error."""
    if not isinstance(max_columns, int) or isinstance(max_columns, bool) or max_columns <= 0:
        raise DeyelConfigError(f"max_columns must be a positive number of columns, got {max_columns!r}")
    return max_columns


def check_field_name(name: str, redact: Callable[[str], str] = str) -> None:
    """Refuse a field name a CSV header or Parquet column cannot show safely: a lone surrogate (not UTF-8)
    or a control character (NUL, ESC... : a terminal or a tool showing the header would act on it).

    Refused rather than escaped: an escaped name (``\\x1b``) is not the field's name, could collide with
    a real one, and Deyel's field identifiers never hold such characters: only a broken or hostile server
    sends them.
    """
    refuse_surrogates(name, f"field name {name!r}")
    if not _CONTROL.isdisjoint(name):
        char = next(c for c in name if c in _CONTROL)
        shown = redact(repr(name))[:80]  # repr escapes every character that is not printable
        raise DeyelBadResponseError(
            f"field name {shown} holds the control character U+{ord(char):04X}, which no CSV header or "
            f"Parquet column should carry (a terminal showing it would act on it): the server sent a field "
            f"name no Deyel form has; extract this form with format='jsonl' (keys escaped as JSON), or name "
            f"the columns to keep with fields=[...]"
        )


def json_line(record: Any) -> bytes | None:
    """``json_text(record)`` as UTF-8 bytes, through msgspec; None where only ``json`` can tell the bytes
    (a float msgspec writes otherwise, a lone surrogate, a value JSON has no form for): the caller then
    encodes that record with ``json_text``. For parsed JSON values (string keys) the bytes are identical
    (``tests/test_json_codec.py`` checks it over generated values)."""
    try:
        data = _fast_encode(record)
    except (TypeError, ValueError, msgspec.MsgspecError, RecursionError):
        return None
    return None if _float_written_otherwise(record) else data


def _float_written_otherwise(record: Any) -> bool:
    """Whether ``record`` may hold a float msgspec writes otherwise than ``json``: NaN, an infinity, or one
    outside ``[1e-4, 1e16)`` but zero. Each 0xcb byte of its MessagePack form is read as the float that
    would follow it: every float is, and a false positive (0xcb inside a string or an integer) only costs
    the slower encoder."""
    try:
        packed = _msgpack_encode(record)
    except (TypeError, ValueError, OverflowError, msgspec.MsgspecError, RecursionError):
        return True  # an integer past 64 bits, which MessagePack has no form for: ask json
    return packed_floats_written_otherwise(packed)


def packed_floats_written_otherwise(packed: bytes) -> bool:
    """Whether MessagePack ``packed`` may hold a float msgspec writes otherwise than ``json``: every float is
    0xcb and its 8 bytes; a 0xcb inside a string or an integer is a false alarm that only costs the slower
    path."""
    end = len(packed) - 8
    at = packed.find(b"\xcb", 0, end)
    while at != -1:
        (value,) = _FLOAT64.unpack_from(packed, at + 1)
        if value != 0.0 and not 1e-4 <= abs(value) < 1e16:  # NaN fails every comparison: True
            return True
        at = packed.find(b"\xcb", at + 1, end)
    return False


def json_lines(records: Sequence[Any], *, plain: bool = False) -> tuple[bytes, bool, bool]:
    """The JSON Lines of ``records`` (one ``json_text`` per line, UTF-8), whether a record had to be
    escaped to ASCII (a lone surrogate, which UTF-8 cannot hold: see :func:`encodable_json`), and whether
    one holds NaN or an infinity (JSON has no form for them: written ``NaN``, ``Infinity``, as ``json``
    writes and reads them; a server sent ``NaN``, or a number past a float's range such as ``1e400``).

    :param plain: the records are (some of) a page msgspec parsed from a plain body
        (:func:`deyel_provider.http.json_body.response_body`): they hold only text, integers, booleans,
        nulls, lists, objects with text keys and floats msgspec writes as ``json`` does, so the page is
        encoded in one msgspec call without :func:`_page_lines`' walk over its values."""
    page = _plain_lines(records) if plain else _page_lines(records)
    if page is not None:
        return page, False, False
    lines: list[bytes] = []
    escaped = nonfinite = False
    for record in records:
        line = json_line(record)
        if line is None:
            try:
                text = _json_finite(record)
            except ValueError:  # NaN or an infinity: the only value allow_nan refuses
                text, nonfinite = json_text(record), True
            try:
                line = text.encode("utf-8")
            except UnicodeEncodeError:
                line, escaped = _json_ascii(record).encode("ascii"), True
        lines.append(line)
    lines.append(b"")
    return b"\n".join(lines), escaped, nonfinite


def _plain_lines(records: Sequence[Any]) -> bytes | None:
    """The JSON Lines of a plain page in one msgspec call; None where msgspec refuses it (never, for what
    msgspec parsed: the page then goes record by record, as any other)."""
    try:
        return _fast_encode_lines(records)
    except (TypeError, ValueError, msgspec.MsgspecError, RecursionError):
        return None


def _page_lines(records: Sequence[Any]) -> bytes | None:
    """The JSON Lines of a whole page in one msgspec call, where no record needs ``json``'s own text: Deyel's
    floats are amounts and rates, inside ``[1e-4, 1e16)``, so this is every page but a rare one. None: the
    page goes record by record (:func:`json_line`, then ``json_text`` where msgspec would differ)."""
    try:
        if any(map(_differs, records)):
            return None
        return _fast_encode_lines(records)
    except (TypeError, ValueError, msgspec.MsgspecError, RecursionError):
        return None  # a lone surrogate (UnicodeEncodeError), a type JSON has no form for, deep nesting


def _differs(value: Any) -> bool:
    """Whether msgspec may write ``value`` otherwise than ``json``: it holds a float outside
    ``[1e-4, 1e16)`` but zero (NaN and the infinities included), a key that is not text, or a type this check
    does not know. Exact, unlike :func:`_float_written_otherwise`'s byte scan (whose false alarms, a 0xcb
    inside a float's own bytes, hit most pages), and cheaper per record than a MessagePack call."""
    kind = type(value)
    if kind in _SAME_TEXT:
        return False
    if kind is float:
        return value != 0.0 and not 1e-4 <= abs(value) < 1e16  # NaN fails every comparison: True
    if kind is dict:
        for key, item in value.items():
            # The type test inline: a call per plain value would cost more than the rest of the check.
            if type(key) is not str or (type(item) not in _SAME_TEXT and _differs(item)):
                return True
        return False
    if kind is list:
        for item in value:
            if type(item) not in _SAME_TEXT and _differs(item):
                return True
        return False
    return True


def encodable_json(value: Any) -> str:
    """JSON text of ``value`` that UTF-8 can hold: escaped to ASCII only when it must be."""
    text = json_text(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _json_ascii(value)
    return text


def refuse_surrogates(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise DeyelBadResponseError(
            f'{where} holds a lone surrogate (legal in JSON, e.g. "\\ud800", but not writable as UTF-8 '
            f"text): CSV cannot hold it; extract this form with format='jsonl', which keeps it escaped"
        ) from None


class FileSink(Protocol):
    """One output file being written (see :class:`deyel_provider.storage.compression.EncodedFile`)."""

    #: Where the format's bytes go (through the file's codec, if it has one).
    stream: IO[bytes]

    @property
    def size(self) -> int:
        """Bytes the file holds so far, as stored."""
        ...

    def close(self) -> None: ...


#: Opens a new file for part ``number`` of the output.
OpenFile = Callable[[int], FileSink]


@dataclass
class Part:
    """One output file of a run: written as one file, or as several segments that a rewrite joins (a Parquet
    schema that widened after a row group was written)."""

    number: int
    files: list[FileSink]
    records: int = 0
    #: What each file was written with, for :meth:`RecordWriter.needs_rewrite` (format-specific).
    layout: list[Any] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(sink.size for sink in self.files)


class RecordWriter(ABC):
    """Writes a run's pages of instances into one file, or into numbered parts of about ``max_file_bytes``.

    Files come from ``open_file(part_number)``. A part ends at the first page (Parquet: row group) that
    takes it to ``max_file_bytes`` or past. After :meth:`close`, a part for which :meth:`needs_rewrite` is
    true must be copied through :meth:`rewrite` before it is published (a CSV column or a Parquet type that
    changed after the part was written), so that every part has the run's final columns and types.
    """

    #: Whether :meth:`write_page` gains from ``plain=True`` (the reader learns it at a cost: ``parse_page``).
    takes_plain: ClassVar[bool] = False

    def __init__(
        self,
        open_file: OpenFile,
        fields: Sequence[str] | None = None,
        *,
        max_file_bytes: int | None = None,
        max_columns: int = DEFAULT_MAX_COLUMNS,
        redact: Callable[[str], str] = str,
    ) -> None:
        self._open_file = open_file
        self.fields = list(fields) if fields is not None else None
        self.max_file_bytes = max_file_bytes
        self.max_columns = check_max_columns(max_columns)
        self._redact = redact
        self.parts: list[Part] = []
        self.records = 0
        self._current: Part | None = None

    def write_page(self, records: Sequence[dict[str, Any]], *, plain: bool = False) -> None:
        """Write one page of records.

        :param plain: the records are as msgspec parsed them from a plain body (``Page.plain``, see
            :func:`deyel_provider.http.json_body.response_body`): JSON Lines encodes them in one msgspec call
            with no check of their values. Only for records nobody changed since.
        """
        if not records:
            return
        part = self._current or self._start_part()
        self._write(part, records, plain=plain)
        part.records += len(records)
        self.records += len(records)
        if self.max_file_bytes is not None and part.size >= self.max_file_bytes:
            self._end_part(part)

    @property
    def completed_parts(self) -> int:
        """Parts ended so far (their files closed): every page written before is in them, none after."""
        return len(self.parts) - (self._current is not None)

    def close(self) -> None:
        """Complete the last part; an empty run still gets one (empty) file."""
        if self._current is None and not self.parts:
            self._start_part()
        if self._current is not None:
            self._end_part(self._current)

    def needs_rewrite(self, part: Part) -> bool:
        """Whether ``part`` lacks columns (or types) that the run found after it was written."""
        return False

    def rewrite(self, part: Part, sources: Iterable[IO[bytes]], sink: IO[bytes]) -> None:
        """Copy ``part`` (its files, as read back, in order; each usable until the next is taken) into
        ``sink`` with the run's final layout."""
        raise NotImplementedError(f"{type(self).__name__} never needs a rewrite")

    def _new_fields(self, records: Sequence[dict[str, Any]], known: Container[str], count: int) -> list[str]:
        """The names in ``records`` not in ``known`` (``count`` columns so far), in first-seen order, each
        checked (:func:`check_field_name`); a :class:`DeyelSchemaError` at the first past ``max_columns``."""
        new: dict[str, None] = {}
        for index, record in enumerate(records):
            for name in record:
                if name in known or name in new:
                    continue
                if count + len(new) >= self.max_columns:
                    raise self._too_many_columns(name, index)
                check_field_name(name, self._redact)
                new[name] = None
        return list(new)

    def _too_many_columns(self, name: str, index: int) -> DeyelSchemaError:
        """The error for field ``name`` of the page's record ``index``, one column past ``max_columns``."""
        position = self.records + index + 1
        shown = self._redact(repr(name))[:80]
        return DeyelSchemaError(
            f"record {position} of this run brings field {shown}, a column past max_columns="
            f"{self.max_columns} distinct columns for this output (a server sending new field names per "
            f"instance would make every row as wide as all of them): if the form really has that many "
            f"fields, raise max_columns (an option of DeyelExtractOperator), keep fewer with fields=[...], "
            f"or use format='jsonl'",
            field=shown,
            position=position,
        )

    def _start_part(self) -> Part:
        number = len(self.parts)
        part = Part(number, [self._open_file(number)])
        self.parts.append(part)
        self._current = part
        return part

    def _end_part(self, part: Part) -> None:
        self._current = None
        self._finish(part)
        for sink in part.files:
            sink.close()

    @abstractmethod
    def _write(self, part: Part, records: Sequence[dict[str, Any]], *, plain: bool = False) -> None: ...

    def _finish(self, part: Part) -> None:  # noqa: B027 - optional hook
        """Write what the part still needs once its last page is in (a header, a footer)."""
