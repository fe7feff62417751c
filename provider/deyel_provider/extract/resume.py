"""Resuming a retried extraction after the slices an earlier attempt completed: its staged parts, recorded
and verified.

An output split into parts (``max_file_bytes``) is staged part by part: when a part's file is closed, every
slice before it is in it and none after. Once the next slice starts at or after the end of the last slice it
holds (not inside a crowded millisecond still being paged), the attempt records the parts so far, each with
its temporary name, records, bytes and SHA-256, and that end (the *boundary*), with the run's window, output,
run and owner, under a MAC from the connection's key: in the task's state (Airflow 3.3+,
``context["task_state_store"]``), else in ``<output name>.resume.json`` beside the parts.

A retry that finds a record verifies it (its MAC; the same owner, run, output, options and window; every
part there, of that size, hash and record count), reuses those parts as the first ones and reads only
``[boundary, end)``; anything else is logged with the reason and the whole window is read again. The window
must be bounded (an interval, a partition, a watermark window, whose end the record keeps): an instance in
``[start, boundary)`` that changed since moved past the end, so the union still holds each instance once
(docs/extraction.md, "Resume").
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from deyel_provider.extract.parts import OutputFiles, WrittenPart
from deyel_provider.extract.spec import OutputSpec, WindowSpec
from deyel_provider.extract.staged import read_back
from deyel_provider.extract.watermark import WatermarkSigner
from deyel_provider.extract.watermark_run import task_watermark_key
from deyel_provider.storage import publish

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath

    from deyel_provider.connection.settings import DeyelConfig
    from deyel_provider.extract.formats.base import RecordWriter
    from deyel_provider.read.slice_requests import Slice

VERSION = 1
#: The state object beside the parts where Airflow keeps no task state (before 3.3).
STATE_SUFFIX = ".resume.json"
#: The most of a state object read (a thousand parts take about 150 KB).
MAX_STATE_BYTES = 1 << 20


@dataclass(frozen=True)
class ResumeSpec:
    """Whose attempt this is: what the staged parts are recorded under and verified against.

    :param owner: the task's watermark key (connection, DAG, task, map index, form, field, search).
    :param run_id: the DAG run; a record of another run is never reused.
    :param signer: MACs with the connection's key.
    :param store: ``context["task_state_store"]`` (Airflow 3.3+), None: a state object beside the parts.
    :param retry: this attempt is a retry (``try_number`` > 1): why it does not resume is logged.
    :param retries_left: another attempt follows a failure of this one: only then are staged parts kept.
    """

    owner: str
    run_id: str
    signer: WatermarkSigner
    store: Any = None
    retry: bool = False
    retries_left: bool = True


def resume_spec(
    context: Context,
    config: DeyelConfig,
    *,
    form: str,
    field: str,
    search: str | None,
    conn_id: str,
    task_id: str,
) -> ResumeSpec | None:
    """The :class:`ResumeSpec` of an operator's attempt (None without a run id)."""
    dag_run = context.get("dag_run")
    run_id = getattr(dag_run, "run_id", None) or context.get("run_id")
    if not isinstance(run_id, str) or not run_id:
        return None
    ti = context.get("ti")
    try_number, max_tries = getattr(ti, "try_number", None), getattr(ti, "max_tries", None)
    owner = task_watermark_key(
        context, form=form, field=field, search=search, conn_id=conn_id, task_id=task_id, shared=None
    )
    return ResumeSpec(
        owner=owner,
        run_id=run_id,
        signer=WatermarkSigner.for_connection(config.client_secret, config.token_url, config.client_id),
        store=context.get("task_state_store"),
        retry=isinstance(try_number, int) and try_number > 1,
        retries_left=not (
            isinstance(try_number, int) and isinstance(max_tries, int) and try_number > max_tries
        ),
    )


@dataclass(frozen=True)
class StagedPart:
    """A part an attempt completed: its file number, temporary name, records, bytes and SHA-256."""

    number: int
    name: str
    records: int
    bytes: int
    sha256: str


class Staging:
    """One attempt's staged parts: those of an earlier attempt it reuses, then its own as they complete.

    Built by :meth:`begin`; the extraction reads :attr:`read_window`, calls :meth:`page_written` after each
    slice, :meth:`failed` on a failure (the names to keep) and :meth:`done` once published.
    """

    def __init__(
        self, spec: ResumeSpec, files: OutputFiles, output: OutputSpec, window: WindowSpec, log: Any
    ) -> None:
        self._spec = spec
        self._files = files
        self._format = output.format
        self._output = [output.format, output.compression, output.max_file_bytes, _fields(output)]
        self._window = window
        self._log = log
        self._key = f"{spec.owner}:resume"
        self._sidecar = sidecar_of(files.target)
        #: Reused from the earlier attempt (file numbers 0..n-1), then this attempt's committed ones.
        self.parts: list[StagedPart] = []
        self._reused: list[WrittenPart] = []
        self.boundary: int | None = None
        self._end: int | None = None
        #: The keys the recorded parts hold, first seen first (JSON Lines lists them for lineage).
        self.columns: list[str] = []
        self._pending: tuple[list[StagedPart], int, int | None, list[str]] | None = None
        #: Parts the writer had completed at the last piece.
        self._completed = 0
        #: False once a record could not be written: the attempt goes on without recording.
        self._recording = True

    # -- the attempt's start ---------------------------------------------------------------------------------

    @classmethod
    def begin(
        cls, spec: ResumeSpec | None, files: OutputFiles, output: OutputSpec, window: WindowSpec, log: Any
    ) -> Staging | None:
        """The staging of this attempt, after the earlier attempt's parts where they verify; None where the
        output or window allows no staged parts (said in the log of a retry)."""
        if spec is None:
            return None
        staging = cls(spec, files, output, window, log)
        why = _not_resumable(output, window)
        if why is not None:
            if spec.retry:  # a first try has no record to say why about, nor to remove
                log.info("not resuming after an earlier attempt: %s; reading the whole window", why)
                staging._drop()
            return None
        state = staging._load()
        if state is not None:
            why = staging._verify(state)
            if why is None:
                staging._log.info(
                    "resuming after an earlier attempt: %d staged part(s) of %d records verified (size, "
                    "SHA-256, records, run, window, owner); reading the rest of the window, [%s, %s)",
                    len(staging.parts),
                    staging.records,
                    staging.boundary,
                    staging._end,
                )
            else:
                staging._log.warning(
                    "not resuming after an earlier attempt: %s; reading the whole window again", why
                )
                staging._restart()
        elif spec.retry:
            log.info("nothing to resume: no earlier attempt recorded a staged part; reading the whole window")
        return staging

    @property
    def records(self) -> int:
        return sum(part.records for part in self.parts)

    @property
    def kept(self) -> set[str]:
        return {part.name for part in self.parts}

    @property
    def reused(self) -> list[WrittenPart]:
        """The earlier attempt's parts, ready to publish before this attempt's."""
        return list(self._reused)

    @property
    def read_window(self) -> WindowSpec:
        """What is left to read: ``[boundary, end)`` of the recorded window, or the whole window."""
        if self.boundary is None:
            return self._window
        return WindowSpec(self.boundary, self._end, end_at_server_time=False)

    # -- during the read -------------------------------------------------------------------------------------

    def page_written(self, piece: Slice, writer: RecordWriter, window_end: int | None) -> None:
        """After ``piece`` was written: commit the parts pending once a slice starts at or past their end;
        stage the parts the writer completed with ``piece`` as pending."""
        if self._pending is not None:
            if piece.start >= self._pending[1]:
                self._commit()
            else:  # a crowded millisecond goes on in the next part: these parts hold part of it
                self._pending = None
        completed, staged = writer.completed_parts, len(self.parts) - len(self._reused)
        ended, self._completed = completed > self._completed, completed
        # Only a part this piece ended holds everything up to its end (a piece that ends no part went on
        # into the open one).
        if not ended or piece.end is None or window_end is None:
            return
        first = self._files.first_part
        pending = []
        for part in writer.parts[staged:completed]:
            name, digest = self._files.staged(first + part.number)
            if digest is None:
                return
            pending.append(StagedPart(first + part.number, name, part.records, part.size, digest))
        # Every key written so far is in these parts: the piece that ended the last left nothing open.
        self._pending = (pending, piece.end, window_end, list(getattr(writer, "columns", None) or []))

    def _commit(self) -> None:
        assert self._pending is not None
        parts, boundary, window_end, columns = self._pending
        self._pending = None
        self.parts += parts
        self.boundary, self._end, self.columns = boundary, window_end, columns
        if not self._recording:
            return
        try:
            self._save()
        except Exception as exc:  # a record is for a retry: failing to write one must not fail this attempt
            self._recording = False
            self._log.warning(
                "could not record the staged parts (%s): going on without; a retry resumes after the parts "
                "recorded before, if any, or reads the whole window",
                _reason(exc),
            )

    # -- the attempt's end -----------------------------------------------------------------------------------

    def failed(self) -> set[str]:
        """The staged parts to keep for the next attempt (none when no retry follows, or none committed)."""
        if self._spec.retries_left and self.parts:
            self._log.info(
                "keeping %d staged part(s) (%d records, slices up to %s) for the retry to resume after",
                len(self.parts),
                self.records,
                self.boundary,
            )
            return self.kept
        self._drop()
        return set()

    def done(self) -> None:
        """Once published (or skipped): no staged part remains, nor its record."""
        self._drop()

    # -- the record ------------------------------------------------------------------------------------------

    def _body(self) -> dict[str, Any]:
        return {
            "kind": "deyel_resume",
            "v": VERSION,
            "owner": self._spec.owner,
            "run_id": self._spec.run_id,
            "target": str(self._files.target),
            "output": self._output,
            "window": [self._window.start, self._end],
            "boundary": self.boundary,
            "parts": [[p.number, p.name, p.records, p.bytes, p.sha256] for p in self.parts],
            "columns": self.columns,
        }

    def _save(self) -> None:
        body = self._body()
        value = {**body, "mac": self._spec.signer.mac(body)}
        if self._spec.store is not None:
            self._spec.store.set(self._key, value)
            return
        temp = publish.temp_beside(self._sidecar, private=True)
        try:
            with temp.open("wb") as out:
                out.write(json.dumps(value, separators=(",", ":")).encode("utf-8"))
            temp.move(self._sidecar)
        except BaseException:
            publish.discard(temp)
            raise

    def _load(self) -> Any:
        if self._spec.store is not None:
            return self._spec.store.get(self._key)
        publish.remove_leftovers(self._sidecar)
        raw = publish.read_own_file(self._sidecar, MAX_STATE_BYTES, kind="resume state")
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):  # nested past the parser's depth: planted, not ours
            return "unreadable"

    def _drop(self) -> None:
        try:
            if self._spec.store is not None:
                self._spec.store.delete(self._key)  # a no-op without one
                return
            name = self._sidecar.name
            publish.remove_own_files(
                self._sidecar, publish.glob_escape(name), lambda found: found == name, "its run is over"
            )
        except Exception as exc:  # after a publish, or while a failure is raised: never this attempt's end
            self._log.warning(
                "could not remove the resume record (%s): an attempt that finds it finds its parts gone and "
                "reads the whole window",
                _reason(exc),
            )

    def _restart(self) -> None:
        self.parts, self._reused, self.boundary, self._end, self.columns = [], [], None, None, []
        self._drop()

    def _verify(self, state: Any) -> str | None:
        """Why the recorded parts cannot be reused, or None once they are (then :attr:`parts` holds them)."""
        try:
            return self._verify_record(state)
        except (KeyError, TypeError, ValueError) as exc:
            return f"its record is not of this release's shape ({type(exc).__name__})"
        except OSError as exc:
            return f"a staged part could not be read back ({exc.strerror or type(exc).__name__})"

    def _verify_record(self, state: Any) -> str | None:
        if not isinstance(state, dict) or state.get("kind") != "deyel_resume" or state.get("v") != VERSION:
            return "its record is not a resume state of this provider"
        body = {k: v for k, v in state.items() if k != "mac"}
        mac = state.get("mac")
        try:
            genuine = (
                isinstance(mac, str)
                and mac.isascii()
                and hmac.compare_digest(mac, self._spec.signer.mac(body))
            )
        except (ValueError, TypeError, RecursionError):
            genuine = False
        if not genuine:
            return (
                "its record fails its MAC (not written with this connection's client secret: altered or "
                "planted)"
            )
        if body["owner"] != self._spec.owner:
            return "its record belongs to another task (connection, DAG, task, form, field or search)"
        if body["run_id"] != self._spec.run_id:
            return f"its record is of another run ({str(body['run_id'])[:80]!r})"
        if body["target"] != str(self._files.target):
            return f"its parts were staged for another output ({str(body['target'])[:200]!r})"
        if body["output"] != self._output:
            return (
                "its parts were written with other output options (format, compression, max_file_bytes, "
                "fields)"
            )
        start, end = body["window"]
        window = self._window
        if start != window.start or (not window.end_at_server_time and end != window.end):
            return (
                f"its parts hold the window [{start}, {end}), not this attempt's [{window.start}, "
                f"{'the present' if window.end_at_server_time else window.end})"
            )
        parts = [StagedPart(*entry) for entry in body["parts"]]
        if [p.number for p in parts] != list(range(len(parts))) or not parts:
            return "its record lists no run of parts numbered from 0"
        for part in parts:
            why = self._verify_part(part)
            if why is not None:
                return why
        columns = [str(name) for name in body["columns"]]
        self.parts, self.boundary, self._end, self.columns = parts, body["boundary"], end, columns
        self._files.first_part = len(parts)
        for written in self._reused:
            self._files.track(written.temp)
        return None

    def _verify_part(self, part: StagedPart) -> str | None:
        temp = self._files.adopt(part.number, part.name)
        if temp is None:
            return f"staged part {part.number} ({part.name}) is gone, or not a regular file of ours"
        with temp.open("rb") as raw:
            held = read_back(raw, self._files.codec, self._format)
        target = self._files.part_target(part.number)
        self._reused.append(WrittenPart(part.number, temp, target, part.records, part.bytes))
        if held.size != part.bytes:
            return (
                f"staged part {part.number} holds {held.size} bytes, not the {part.bytes} recorded "
                f"(truncated?)"
            )
        if held.sha256 != part.sha256:
            return f"staged part {part.number} does not hold the bytes recorded (its SHA-256 differs)"
        if held.records != part.records:
            records = "no readable" if held.records is None else held.records
            return f"staged part {part.number} holds {records} records, not the {part.records} recorded"
        return None


def _reason(exc: BaseException) -> str:
    """What a failed record write or removal says in the log (no value of the exception's text)."""
    return getattr(exc, "strerror", None) or type(exc).__name__


def _fields(output: OutputSpec) -> list[str] | None:
    return None if output.fields is None else list(output.fields)


def _not_resumable(output: OutputSpec, window: WindowSpec) -> str | None:
    """Why this output or window allows no staged parts; None where it does."""
    if not output.split:
        return "the output is one file (max_file_bytes splits it into parts a retry can reuse)"
    if output.format == "parquet" or (output.format == "csv" and output.fields is None):
        return (
            f"a {output.format} part may be rewritten once the run has seen every column "
            f"({'fields=[...] fixes the columns of a CSV' if output.format == 'csv' else 'use jsonl'})"
        )
    if window.start is None or (window.end is None and not window.end_at_server_time):
        return "a full load reads up to the server's present, which has moved since the earlier attempt"
    return None


def sidecar_of(target: ObjectStoragePath) -> ObjectStoragePath:
    """Where a split output's resume state lies when Airflow keeps no task state."""
    return target.parent / f"{target.name}{STATE_SUFFIX}"
