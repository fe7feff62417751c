"""The ids a listing returns now, in a memory that does not grow with them: a bitmap and sorted runs on disk.

Canonical decimal ids below 2**28 (Deyel's sequence) are bits, as in :class:`IdSet`: at most 32 MiB
whatever their number (10M sequential ids: 1.25 MB). Every other id (a UUID, a prefixed or a ten-digit id)
is buffered as its UTF-8 bytes until the buffer holds about :data:`RUN_BYTES`, then sorted and written as
one run (an id listed twice is dropped when the runs are merged) into a private folder (``mkdtemp``: mode
0700, under ``spill_dir`` or the temp dir, which is refused when another user could rename entries in it).
The folder holds a lock for as long as its listing runs: a listing that finds the folder of a killed one
(SIGKILL, the OOM killer) with its lock free removes it.
:meth:`CurrentIds.others` merges the runs (at most :data:`FAN_IN` open at once: more are merged in rounds
first) into one ascending, repeat-free stream of blocks. Ascending means by UTF-8 bytes (``surrogatepass``,
so any text Python can hold), which is Python's own order of ``str``: the order a snapshot stores its ids
in, so the two are compared by a streaming merge-join (:func:`join`).

Ids travel in blocks (lists of at most :data:`BLOCK_IDS` ids and, past their first id, about
:data:`BLOCK_BYTES` of them: long ids must not make a merge of :data:`FAN_IN` runs hold a run each), so
sorting, merging, joining and encoding run in C a block at a time rather than in Python an id at a time.
A block is stored as its id count, each id's length, then the ids' bytes (4-byte little-endian numbers),
in runs and in a snapshot's body alike.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import sys
import tempfile
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache
from itertools import accumulate, chain, compress, filterfalse, islice, repeat
from operator import eq, ne
from struct import Struct

from deyel_provider.exceptions import DeyelConfigError
from deyel_provider.read.id_set import IdSet, _small_number
from deyel_provider.read.spill_room import room_for_ids

#: The estimated bytes of ids held before they are sorted and written as a run (each costs its length plus
#: about 56 bytes: the bytes object's header and allocation, and its slot in the list).
RUN_BYTES = 24 * 1024 * 1024
#: The most runs read at once: more are first merged in rounds.
FAN_IN = 64
#: Ids per stored block (a run's blocks are read one per run at a time while merging).
BLOCK_IDS = 1024
#: The bytes of ids a stored block holds at most, unless its one id is longer.
BLOCK_BYTES = 1 << 16
#: The most ids a stored block may declare (reading refuses more: a bound on one block's memory).
MAX_BLOCK_IDS = 1 << 16
_PER_ID = 56
#: Previous ids compared at a time with the current ones in the merge-join (see :func:`_missing`).
_PIECE = 64
_BLOCK_BYTES = 1 << 16
_BIG_ENDIAN = sys.byteorder == "big"
_PREFIX = "deyel-deletes-"
_LOCK = "lock"


def encode(instance_id: str) -> bytes:
    """An id as it is sorted and stored: its UTF-8 bytes (lone surrogates kept, as JSON may carry them)."""
    return instance_id.encode("utf-8", "surrogatepass")


def decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogatepass")


def encode_block(ids: list[bytes]) -> bytes:
    """One stored block: the count, each length, then the bytes (the count and lengths 4-byte LE)."""
    lengths = _little_endian(array("I", map(len, ids)))
    return len(ids).to_bytes(4, "little") + lengths.tobytes() + b"".join(ids)


def _little_endian(numbers: array[int]) -> array[int]:
    if _BIG_ENDIAN:
        numbers.byteswap()
    return numbers


def encode_blocks(ids: list[bytes]) -> Iterator[bytes]:
    """``ids`` as stored blocks: at most :data:`BLOCK_IDS` ids each, about :data:`BLOCK_BYTES` of them."""
    for start in range(0, len(ids), BLOCK_IDS):
        part = ids[start : start + BLOCK_IDS] if len(ids) > BLOCK_IDS else ids
        data = b"".join(part)
        if len(data) > BLOCK_BYTES:
            yield from map(encode_block, _by_bytes(part))
            continue
        count, first = len(part), len(part[0])
        if len(data) == count * first and min(map(len, part)) == first:  # one length (UUIDs, a sequence)
            lengths = first.to_bytes(4, "little") * count
        else:
            lengths = _little_endian(array("I", map(len, part))).tobytes()
        yield b"".join((count.to_bytes(4, "little"), lengths, data))


def decode_blocks(chunks: Iterable[bytes]) -> Iterator[list[bytes]]:
    """The blocks of a stream cut anywhere (``ValueError`` when it ends inside one or one is malformed)."""
    buffer = bytearray()
    start = 0  # where the next block begins in ``buffer`` (the ones before it are cut once per chunk)
    for chunk in chunks:
        del buffer[:start]
        buffer += chunk
        start = 0
        while len(buffer) - start >= 4:
            count = int.from_bytes(buffer[start : start + 4], "little")
            if not 0 < count <= MAX_BLOCK_IDS:
                raise ValueError(f"a block of {count} ids")
            head = start + 4 + 4 * count
            if len(buffer) < head:
                break
            lengths = _little_endian(array("I", buffer[start + 4 : head]))
            # One struct of "<n>s" fields cuts the ids in C (about twice as fast as a slice per id); a block
            # as written (at most BLOCK_IDS) of ids of one length (UUIDs, a sequence's decimals) reuses its.
            same = count <= BLOCK_IDS and lengths.count(lengths[0]) == count
            end = head + (count * lengths[0] if same else sum(lengths))
            if len(buffer) < end:
                break
            if same:
                cutter = _same_lengths(count, lengths[0])
            else:
                cutter = Struct("<" + "%ds" * count % tuple(lengths))
            yield list(cutter.unpack_from(buffer, head))
            start = end
    if len(buffer) > start:
        raise ValueError("the ids end inside a block")


def join(
    previous: Iterable[list[bytes]],
    current: Iterable[list[bytes]],
    keep: Callable[[list[bytes]], None],
    gone: Callable[[list[bytes]], None],
) -> int:
    """Merge-join two ascending, repeat-free streams of blocks: each current block goes to ``keep``, the
    previous ids the current stream lacks to ``gone`` (ascending), as they are met; one block of each side is
    held at a time. Returns how many current ids there were."""
    older = iter(previous)
    block: list[bytes] = []
    pos = kept = 0
    for now in current:
        keep(now)
        kept += len(now)
        top = now[-1]
        while True:
            if pos == len(block):
                block, pos = next(older, []), 0
                if not block:
                    break
            cut = bisect_right(block, top, pos)
            if pos < cut:
                lost = _missing(block[pos:cut], now)
                if lost:
                    gone(lost)
            pos = cut
            if cut < len(block):
                break  # the rest is above this block's last id: the next current block decides it
    if pos < len(block):
        gone(block[pos:])
    for rest in older:
        gone(rest)
    return kept


def _missing(older: list[bytes], now: list[bytes]) -> list[bytes]:
    """The ids of ``older`` that ``now`` lacks, both ascending and repeat-free. Two listings mostly agree: a
    piece of :data:`_PIECE` older ids that equals the slice of ``now`` where it would be is told present by
    one list comparison in C (no hash of either side); only a piece that differs (a gone id, or a new one
    among them) is looked up in a set of the current ids in its range."""
    start = bisect_left(now, older[0])
    lost: list[bytes] = []
    for first in range(0, len(older), _PIECE):
        piece = older[first : first + _PIECE]
        if now[start : start + len(piece)] == piece:
            start += len(piece)
            continue
        # now[start - 1] is below piece[0] (an older id matched, or the bisection): every current id in
        # the piece's range lies in now[start:end]
        end = bisect_right(now, piece[-1], start)
        lost += filterfalse(set(now[start:end]).__contains__, piece)
        start = end
    return lost


@lru_cache(maxsize=8)  # at most 8 structs of BLOCK_IDS fields: a few hundred KB
def _same_lengths(count: int, length: int) -> Struct:
    return Struct("<" + f"{length}s" * count)


def merge(runs: list[Iterator[list[bytes]]]) -> Iterator[list[bytes]]:
    """Merge ascending streams of blocks into one, repeat-free (repeats within and across them dropped), in C
    a round at a time: each round takes from every stream the ids up to the smallest of their current blocks'
    last ids (so one block is used up), sorts those few sorted runs together and drops the repeats. A later
    round's ids are above that bound, but for a repeat of it that began a stream's next block."""
    heads = [_Head(block, run) for run in runs if (block := next(run, []))]
    last = None
    while heads:
        bound = min(head.block[-1] for head in heads)
        taken: list[bytes] = []
        for head in heads:
            cut = bisect_right(head.block, bound, head.pos)
            taken += head.block[head.pos : cut]
            head.pos = cut
        for head in heads:
            if head.pos == len(head.block):
                head.block, head.pos = next(head.run, []), 0
        heads = [head for head in heads if head.block]
        taken.sort()
        taken = _unique(taken)
        if taken[0] == last:
            del taken[0]
        if taken:
            last = taken[-1]
            yield taken


class _Head:
    """A stream being merged: its current block and how far it was taken."""

    __slots__ = ("block", "pos", "run")

    def __init__(self, block: list[bytes], run: Iterator[list[bytes]]) -> None:
        self.block, self.pos, self.run = block, 0, run


class CurrentIds(IdSet):
    """The ids listed now: decimal ones in the bitmap, the others spilled to sorted runs (see the module).

    Use it as a context manager: the runs' folder is removed on exit, whatever happened.
    """

    def __init__(
        self, spill_dir: str | None = None, run_bytes: int = RUN_BYTES, fan_in: int = FAN_IN
    ) -> None:
        super().__init__()
        self._spill_dir = spill_dir
        self._run_bytes = run_bytes
        self._fan_in = max(2, fan_in)
        self._buffer: list[bytes] = []
        self._held = 0
        self._folder: str | None = None
        self._lock: int | None = None
        self._runs: list[str] = []
        #: Runs written (the merge rounds' included): how far the spill went.
        self.runs_written = 0

    def __enter__(self) -> CurrentIds:
        try:
            self._private_folder()  # a spill_dir that is refused fails before the form is read
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, instance_id: str) -> bool:
        """Remember ``instance_id``. True for a new decimal id, and for every other one (repeats among those
        are dropped when the runs are merged)."""
        number = _small_number(instance_id) if instance_id.isdecimal() else None
        if number is not None:
            return self._add_number(number)
        data = instance_id.encode("utf-8", "surrogatepass")
        self._buffer.append(data)
        self._held += len(data) + _PER_ID
        if self._held >= self._run_bytes:
            self._spill()
        return True

    def _add_others(self, others: list[str]) -> None:
        try:  # strict UTF-8 (the default, a fast path) differs from surrogatepass only by raising
            encoded = list(map(str.encode, others))
        except UnicodeEncodeError:  # a lone surrogate somewhere in the batch
            encoded = list(map(str.encode, others, repeat("utf-8"), repeat("surrogatepass")))
        held = self._held + sum(map(len, encoded)) + _PER_ID * len(encoded)
        if held < self._run_bytes:
            self._buffer += encoded
            self._held = held
            return
        for data in encoded:  # the batch that fills the buffer: spilled where add() would have
            self._buffer.append(data)
            self._held += len(data) + _PER_ID
            if self._held >= self._run_bytes:
                self._spill()

    @property
    def decimal_count(self) -> int:
        return self._count

    def bits(self) -> bytearray:
        """The bitmap itself (bit ``n`` of byte ``n // 8`` for id ``n``), its trailing zero bytes cut in
        place: never copied (it may be 32 MiB). Call it after the last add."""
        bits = self._bits
        end = len(bits)
        while end:
            start = max(0, end - _BLOCK_BYTES)
            tail = len(bits[start:end].rstrip(b"\0"))
            end = start + tail
            if tail:
                break
        del bits[end:]
        return bits

    def scratch(self, name: str) -> str:
        """A path in the private folder, for another file of the same run (the snapshot's body)."""
        return os.path.join(self._private_folder(), name)

    def others(self) -> Iterator[list[bytes]]:
        """Every non-decimal id once, ascending (by bytes), in blocks. Call it once, after the last add."""
        if not self._runs:
            buffer, self._buffer, self._held = self._buffer, [], 0
            buffer.sort()
            return _blocks(_unique(buffer))
        if self._buffer:
            self._spill()
        while len(self._runs) > self._fan_in:
            group, self._runs = self._runs[: self._fan_in], self._runs[self._fan_in :]
            merged = merge([_read_run(path) for path in group])
            self._runs.append(self._write_run(data for blocks in merged for data in encode_blocks(blocks)))
            for path in group:
                os.unlink(path)
        return merge([_read_run(path) for path in self._runs])

    def close(self) -> None:
        self._buffer, self._held = [], 0
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
            self._runs = []
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def _private_folder(self) -> str:
        if self._folder is None:
            parent = _spill_parent(self._spill_dir)
            _remove_killed(parent)
            # 0700, a fresh name: nobody else can read the ids or plant a file among the runs.
            with room_for_ids(repr(parent)):
                self._folder = folder = tempfile.mkdtemp(prefix=_PREFIX, dir=parent)
                # Locked before it gets its name: another listing never sees the lock free while this runs.
                self._lock = _create(os.path.join(folder, _LOCK + ".new"), os.O_WRONLY)
            fcntl.flock(self._lock, fcntl.LOCK_EX)
            os.rename(os.path.join(folder, _LOCK + ".new"), os.path.join(folder, _LOCK))
        return self._folder

    def _spill(self) -> None:
        buffer, self._buffer, self._held = self._buffer, [], 0
        buffer.sort()
        self._runs.append(self._write_run(encode_blocks(buffer)))  # repeats and all: merge() drops them

    def _write_run(self, blocks: Iterable[bytes]) -> str:
        """A new run of ``blocks`` (encoded, in order)."""
        self.runs_written += 1
        folder = self._private_folder()
        path = os.path.join(folder, f"run-{self.runs_written}")
        with room_for_ids(repr(os.path.dirname(folder))), os.fdopen(_create(path, os.O_WRONLY), "wb") as out:
            for data in blocks:
                out.write(data)
        return path


def _create(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


def _spill_parent(spill_dir: str | None) -> str:
    """The folder the private one is made in (links resolved once), refused when another user owns it or
    could rename entries in it: they could swap the private folder for a link to theirs between two files,
    read the ids and plant runs, i.e. choose the ids this run lists and signs into the next snapshot."""
    if spill_dir is not None:
        os.makedirs(spill_dir, mode=0o700, exist_ok=True)
    parent = os.path.realpath(spill_dir if spill_dir is not None else tempfile.gettempdir())
    info = os.stat(parent)
    shared = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX
    if info.st_uid not in (0, os.getuid()) or shared:
        raise DeyelConfigError(
            f"spill_dir {parent!r} (mode {stat.filemode(info.st_mode)}, uid {info.st_uid}): others can write "
            f"in it without the sticky bit, or it is another user's, so they could swap the ids spilled "
            f"there; nothing was read. Use a folder of this user's own (made 0700 when missing), or one "
            f"with the sticky bit such as /tmp"
        )
    return parent


def _remove_killed(parent: str) -> None:
    """Remove the private folders a killed listing left in ``parent``: this user's, their lock free."""
    try:
        names = [name for name in os.listdir(parent) if name.startswith(_PREFIX)]
    except OSError:
        return
    for name in names:
        folder = os.path.join(parent, name)
        try:
            info = os.lstat(folder)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                continue
            flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # NFS locks want a writer
            fd = os.open(os.path.join(folder, _LOCK), flags)
        except OSError:
            continue  # gone meanwhile, or not locked yet (a listing starting now)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a listing still running
        else:
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            os.close(fd)


def _unique(ids: list[bytes]) -> list[bytes]:
    """Sorted ``ids`` without repeats, told in C (the list itself when it has none, the usual case)."""
    if not any(map(eq, ids, islice(ids, 1, None))):
        return ids
    return list(compress(ids, chain((True,), map(ne, islice(ids, 1, None), ids))))


def _blocks(ids: Iterable[bytes], size: int = BLOCK_IDS) -> Iterator[list[bytes]]:
    ahead = iter(ids)
    for block in iter(lambda: list(islice(ahead, size)), []):
        yield from _by_bytes(block)


def _by_bytes(block: list[bytes]) -> Iterator[list[bytes]]:
    ends = list(accumulate(map(len, block)))
    if ends[-1] <= BLOCK_BYTES:
        yield block
        return
    start = 0
    while start < len(block):
        before = ends[start - 1] if start else 0
        stop = max(start + 1, bisect_right(ends, before + BLOCK_BYTES, start))
        yield block[start:stop]
        start = stop


def _read_run(path: str) -> Iterator[list[bytes]]:
    with open(path, "rb", buffering=0) as source:
        yield from decode_blocks(iter(lambda: source.read(_BLOCK_BYTES), b""))
