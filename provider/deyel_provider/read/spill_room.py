"""A write that found no room on its disk (full, over a quota, past a file size limit): a typed error that
says what was written where and what to change, instead of a bare ``OSError``. Other write errors, and every
read error, are raised as they are."""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import IO, Any

from deyel_provider.exceptions import DeyelConfigError

#: What a write that found no room fails with.
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_SPILLED = (
    "ids other than Deyel's decimal ones are spilled there, about 40 bytes each (10M UUIDs: about 400 MB), "
    "beside the new snapshot's body; free space there (or raise the file size limit), or set spill_dir to "
    "a disk with room"
)


@contextmanager
def no_room(what: str, where: str, advice: str) -> Iterator[None]:
    """Writes of ``what`` in ``where``: one that finds no room is a :class:`DeyelConfigError` saying so and
    ``advice``."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in NO_ROOM:
            raise
        raise DeyelConfigError(f"no room to write {what} in {where} ({exc.strerror}): {advice}") from exc


def room_for_ids(where: str) -> AbstractContextManager[None]:
    """Writes of a listing's ids (spilled runs, the new snapshot's body) in the spill folder ``where``."""
    return no_room("the listed ids", where, _SPILLED)


class RoomChecked:
    """A binary file whose writes and close, where they find no room, raise what ``room()`` makes of it."""

    def __init__(self, raw: IO[bytes], room: Callable[[], AbstractContextManager[None]]) -> None:
        self._raw, self._room = raw, room

    def write(self, data: bytes) -> int:
        with self._room():
            return self._raw.write(data)

    def close(self) -> None:
        with self._room():
            self._raw.close()

    def __enter__(self) -> RoomChecked:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: Any) -> None:
        if error is None:
            self.close()
            return
        # An error is in flight (the read's, a write's): it is what the run failed with, not what closing
        # the file finds after it (its buffer flushed to a full disk), which only goes with it as a note.
        try:
            self.close()
        except Exception as closing:
            error.add_note(f"closing the file then failed too: {closing}")
