"""Writing an extraction's output beside its target and publishing it by one rename, never through a link.

Another local user who can write in the output folder (the example DAG writes under ``/tmp``) may plant a
symbolic link at the final name or at a temporary name, or a folder named like a temporary file. So, on a
local filesystem:

- the folder is opened once and every operation is made relative to that descriptor, so the temporary file
  and the final name are always in the same folder, whatever is renamed meanwhile;
- the temporary file ``<name>.tmp-<uuid>`` is created with ``O_CREAT | O_EXCL | O_NOFOLLOW``, mode 0600 while
  it is written: an existing name of any kind (link, file, FIFO) makes the creation fail instead of being
  followed;
- publishing gives the file the umask's mode (0600 for a ``private`` one: the rejects file, which holds
  whole source records), then renames the temporary file over the final name itself: a link there is
  replaced, not followed; a folder there is a :class:`DeyelConfigError`, never a move into it;
- leftovers ``<name>.tmp-*`` are removed, and files of an earlier release read, only when they are regular
  files of ours (opened without following a link or blocking on a FIFO); anything else is left alone with
  a warning.

Object stores have no links: they keep fsspec's move (copy, then delete the temporary object).
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import uuid
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from deyel_provider.exceptions import DeyelConfigError

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

log = logging.getLogger(__name__)

_umask_guard = threading.Lock()
#: Fresh random names tried before giving up (a clash means someone planted that very name).
_CREATE_ATTEMPTS = 5


def is_local(target: ObjectStoragePath) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(target.fs, LocalFileSystem)


def temp_name(target_name: str) -> str:
    return f"{target_name}.tmp-{uuid.uuid4().hex}"


def _refuse_foreign_links(folder: str) -> None:
    """Refuse a link on the way to the folder that neither this user nor root made.

    Links of one's own (``/data -> /mnt/data``) are followed as usual; a link another user planted where
    they could create names (``/tmp/exports -> ~victim/.ssh``) would move the output into its target. Linux
    blocks that only in sticky world-writable folders (``fs.protected_symlinks``); this checks everywhere.
    """
    me = os.getuid()
    path = "/"
    for part in os.path.abspath(folder).split("/")[1:]:
        path = os.path.join(path, part)
        try:
            info = os.lstat(path)
        except OSError:
            return  # missing: nothing planted there (the open below reports what is wrong)
        if stat.S_ISLNK(info.st_mode) and info.st_uid not in (0, me):
            raise DeyelConfigError(
                f"the output folder {folder!r} goes through {path!r}, a link made by another user "
                f"(uid {info.st_uid}); refusing to follow it"
            )


def check_output_folder(target: ObjectStoragePath, *, parameter: str = "output") -> None:
    """Refuse, before anything is read, a local output folder this worker cannot write: one that exists and
    is not writable (or is no folder), one that is missing under a parent it cannot create it in, or one
    another user owns that anyone may write to (any local user could swap the files).

    Without it the first page's temporary file fails with a bare ``PermissionError`` naming
    ``<name>.tmp-<uuid>``, after the server was asked. Object stores are left to their first write (a check
    would cost a request and prove little: permissions there are per object).

    :param parameter: the argument the user wrote, named in the message.
    """
    if not is_local(target):
        return
    folder = os.path.abspath(str(target.parent.path))
    _refuse_foreign_links(folder)
    user = _user_name()
    existing = folder
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise DeyelConfigError(
            f"{parameter}: the output folder {folder!r} cannot be made: {existing!r} is a file, not a "
            f"folder; choose another {parameter} path"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        if existing == folder:
            raise DeyelConfigError(
                f"{parameter}: the output folder {folder!r} is not writable by this worker (user {user}): "
                f"give {user} write permission on it, or choose another {parameter} folder; nothing was read"
            )
        raise DeyelConfigError(
            f"{parameter}: the output folder {folder!r} does not exist and {user} cannot create it (its "
            f"parent {existing!r} is not writable): create it writable for {user}, or choose another "
            f"{parameter} folder; nothing was read"
        )
    if existing == folder:
        info = os.stat(folder)
        foreign = info.st_uid not in (0, os.getuid())
        if foreign and info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX:
            raise DeyelConfigError(
                f"{parameter}: the output folder {folder!r} belongs to another user (uid {info.st_uid}) and "
                f"anyone may write in it (mode {stat.filemode(info.st_mode)}, no sticky bit), so any local "
                f"user could replace the files: use a folder of {user}'s own"
            )


def _user_name() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return f"uid {os.geteuid()}"


def _open_folder(folder: str) -> int:
    _refuse_foreign_links(folder)
    try:
        return os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise DeyelConfigError(f"cannot open the output folder {folder!r}: {exc.strerror}") from None


def _published_mode() -> int:
    """What a plain file creation would give (``0o666`` less the umask), read without a race-prone window
    that matters: a file another thread creates meanwhile is only more private."""
    with _umask_guard:
        mask = os.umask(0o077)
        os.umask(mask)
    return 0o666 & ~mask


class LocalTemp:
    """A temporary file beside ``target``, created exclusively without following links.

    It offers what the extraction uses of an ``ObjectStoragePath`` (``name``, ``open``, ``unlink``, ``move``)
    so the extraction does not care which kind of storage it writes to.
    """

    def __init__(
        self, target: ObjectStoragePath, dir_fd: int | None = None, *, private: bool = False
    ) -> None:
        self._folder = str(target.parent.path)
        #: Published 0600 (a file of whole source records) instead of the umask's mode.
        self._private = private
        self._target_name = target.name
        # A run of many files shares one descriptor of their folder (``dir_fd``, kept open by its owner):
        # one per file would run out of descriptors.
        self._owns_dir = dir_fd is None
        self._dir_fd = _open_folder(self._folder) if dir_fd is None else dir_fd
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            for _ in range(_CREATE_ATTEMPTS):
                # A name someone planted (guessed or not) is never followed: try another one.
                self.name = temp_name(target.name)
                try:
                    self._fd: int | None = os.open(self.name, flags, 0o600, dir_fd=self._dir_fd)
                    break
                except FileExistsError:
                    log.warning("%s already exists and is not ours; trying another temporary name", self.name)
            else:
                raise DeyelConfigError(
                    f"could not create a temporary file beside {target.name!r} in {self._folder!r}: "
                    f"every name tried was taken"
                )
        except BaseException:
            if self._owns_dir:
                os.close(self._dir_fd)
            raise

    @classmethod
    def existing(cls, target: ObjectStoragePath, name: str, dir_fd: int) -> LocalTemp | None:
        """The temporary file ``name`` an earlier attempt left beside ``target`` (a retry resuming after its
        staged parts), or None unless it is a regular file of ours under a temporary name of ``target``."""
        if not name.startswith(f"{target.name}.tmp-") or "/" in name or "\0" in name:
            return None
        try:
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            return None
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
            return None
        temp = cls.__new__(cls)
        temp._folder, temp._private, temp._target_name = str(target.parent.path), False, target.name
        temp._owns_dir, temp._dir_fd, temp.name, temp._fd = False, dir_fd, name, None
        return temp

    def __repr__(self) -> str:
        return f"LocalTemp({self.name!r})"

    def __str__(self) -> str:
        return os.path.join(self._folder, self.name)

    def open(self, mode: str = "rb") -> IO[Any]:
        if mode == "wb" and self._fd is not None:
            fd, self._fd = self._fd, None
            return os.fdopen(fd, "wb")
        if mode == "rb":
            fd = os.open(self.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._dir_fd)
            return os.fdopen(fd, "rb")
        raise ValueError(f"a temporary output file is written once ('wb') then read ('rb'), not {mode!r}")

    def unlink(self, missing_ok: bool = False) -> None:
        """Remove the temporary name (a link planted there would be removed itself, never followed)."""
        try:
            os.unlink(self.name, dir_fd=self._dir_fd)
        except FileNotFoundError:
            if not missing_ok:
                raise
        finally:
            self._close()

    def move(self, target: ObjectStoragePath) -> None:
        """Publish: rename over the final name itself, in the folder opened at creation."""
        if target.name != self._target_name:
            raise ValueError("a temporary output file is published only under the name it was made for")
        # fchmod through a descriptor opened without following links: chmod by name could follow one.
        fd = os.open(self.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._dir_fd)
        try:
            os.fchmod(fd, 0o600 if self._private else _published_mode())
        finally:
            os.close(fd)
        try:
            os.rename(self.name, target.name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
        except (IsADirectoryError, NotADirectoryError):
            raise DeyelConfigError(
                f"output {target.name!r} in {self._folder!r} is a folder; nothing was written into it"
            ) from None
        self._close()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._dir_fd >= 0:
            if self._owns_dir:
                os.close(self._dir_fd)
            self._dir_fd = -1


def temp_beside(
    target: ObjectStoragePath, dir_fd: int | None = None, *, private: bool = False
) -> LocalTemp | ObjectStoragePath:
    """A new temporary file or object beside ``target``, to write the output into (locally, through the
    folder descriptor ``dir_fd`` when given: see :func:`open_folder`). ``private``: a local file stays 0600
    once published (an object store has no file mode)."""
    if is_local(target):
        return LocalTemp(target, dir_fd, private=private)
    return target.parent / temp_name(target.name)


def open_folder(target: ObjectStoragePath) -> int | None:
    """A descriptor of ``target``'s local folder, for temporary files that share it (the caller closes it);
    None on an object store."""
    return _open_folder(str(target.parent.path)) if is_local(target) else None


def check_targets(target: ObjectStoragePath, names: list[str]) -> None:
    """Refuse, before anything is renamed, a final name beside ``target`` that no rename could replace: a
    folder, or another user's entry (a sticky folder such as ``/tmp`` refuses that rename). Checking them
    all first is what lets a run of several files publish all of them or none.

    A link of ours there is fine: the rename replaces it, never follows it.
    """
    if not is_local(target):
        return
    folder = str(target.parent.path)
    dir_fd = _open_folder(folder)
    try:
        me = os.getuid()
        for name in names:
            try:
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(info.st_mode):
                raise DeyelConfigError(
                    f"output {name!r} in {folder!r} is a folder; nothing was written into it, and no file "
                    f"of this run was published"
                )
            if info.st_uid != me:
                raise DeyelConfigError(
                    f"output {name!r} in {folder!r} belongs to another user (uid {info.st_uid}); no file of "
                    f"this run was published"
                )
    finally:
        os.close(dir_fd)


def remove_leftovers(target: ObjectStoragePath) -> None:
    """Remove ``<name>.tmp-*`` of an interrupted attempt: only regular files of ours, never through a link."""
    prefix = f"{target.name}.tmp-"
    remove_own_files(
        target,
        f"{glob_escape(target.name)}.tmp-*",
        lambda name: name.startswith(prefix),
        "left by an interrupted attempt",
    )


def remove_own_files(
    target: ObjectStoragePath,
    pattern: str,
    matches: Callable[[str], bool],
    why: str,
    *,
    kind: str = "temporary",
) -> None:
    """Remove the files beside ``target`` whose names ``matches`` (found by the glob ``pattern`` on object
    stores): locally only regular files of ours, never through a link; anything else is left with a warning
    (``kind`` names what the files were meant to be).
    """
    if not is_local(target):
        for found in target.parent.glob(pattern):
            if matches(found.name):
                log.info("removing %s, %s", found.name, why)
                discard(found)
        return
    try:
        dir_fd = _open_folder(str(target.parent.path))
    except DeyelConfigError:
        return  # the write below reports the folder problem
    try:
        with os.scandir(dir_fd) as entries:
            names = [entry.name for entry in entries if matches(entry.name)]
        for name in names:
            try:
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid():
                    log.info("removing %s, %s", name, why)
                    os.unlink(name, dir_fd=dir_fd)
                else:
                    log.warning("leaving %s alone: it is not a %s file of this provider", name, kind)
            except OSError as exc:
                log.warning("could not remove %s: %s", name, exc.strerror)
    finally:
        os.close(dir_fd)


def read_own_file(
    target: ObjectStoragePath, limit: int, dir_fd: int | None = None, *, kind: str
) -> bytes | None:
    """At most ``limit`` bytes of ``target``, or ``None`` when it is absent or not ours (see
    :func:`open_own_file`)."""
    source = open_own_file(target, dir_fd, kind=kind)
    if source is None:
        return None
    with source:
        chunks, left = [], limit
        while left > 0 and (chunk := source.read(left)):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)


def open_own_file(target: ObjectStoragePath, dir_fd: int | None = None, *, kind: str) -> IO[bytes] | None:
    """``target`` open for reading (the caller closes it), or ``None`` when it is absent or not ours.

    Locally the rule of :func:`remove_own_files`: only a regular file of this user is read. It is opened
    without following a link and without blocking (a FIFO another user planted at the name would hang the
    run on open or read), relative to the folder descriptor ``dir_fd`` when given; anything else is left
    alone with a warning (``kind`` names what the file was meant to be). Object stores open the path.
    """
    if not is_local(target):
        try:
            opened: IO[bytes] = target.open("rb")
            return opened
        except FileNotFoundError:
            return None
    folder_fd = dir_fd
    if folder_fd is None:
        try:
            folder_fd = _open_folder(str(target.parent.path))
        except DeyelConfigError:
            return None  # the write reports the folder problem
    try:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(target.name, flags, dir_fd=folder_fd)
        except FileNotFoundError:
            return None
        except OSError:  # ELOOP: a link; EACCES: not ours either
            log.warning("leaving %s alone: it is not a %s file of this provider", target.name, kind)
            return None
        try:
            info = os.fstat(fd)
            if stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid():
                return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        log.warning("leaving %s alone: it is not a %s file of this provider", target.name, kind)
        return None
    finally:
        if dir_fd is None:
            os.close(folder_fd)


def glob_escape(name: str) -> str:
    import glob

    return glob.escape(name)


def discard(path: LocalTemp | ObjectStoragePath | None) -> None:
    """Remove a temporary file or object; a failure is logged, the original error matters more."""
    if path is None:
        return
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not remove %s: %s", path, exc)
