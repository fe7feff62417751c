"""A write that found no room on its disk (full, over a quota, past a file size limit): a typed error that
says where and what to change, instead of a bare ``OSError``. Other write errors, and every read error, are
raised as they are."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager

from deyel_provider.exceptions import DeyelConfigError

#: What a write that found no room fails with.
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


@contextmanager
def room_for_ids(where: str) -> Iterator[None]:
    """Writes of a listing's ids (spilled runs, the new snapshot's body) under ``where``: one that finds no
    room is a :class:`DeyelConfigError` naming it, what the ids take, and ``spill_dir``."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in NO_ROOM:
            raise
        raise DeyelConfigError(
            f"no room to write the listed ids in {where} ({exc.strerror}): ids other than Deyel's "
            f"decimal ones are spilled under spill_dir, about 40 bytes each (10M UUIDs: about 400 MB), "
            f"beside the new snapshot's body; free space, or set spill_dir to a disk with room"
        ) from exc
