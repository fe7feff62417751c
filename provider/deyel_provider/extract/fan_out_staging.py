"""The staging folder of one run of a fan-out group: where its reads stage their parts for the commit, made
and checked as this user's own (locally), and the stale ones of failed runs removed."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import time
from typing import TYPE_CHECKING

from deyel_provider.exceptions import DeyelConfigError
from deyel_provider.extract.parts import PART_DIGITS, split_name
from deyel_provider.storage import publish
from deyel_provider.storage.paths import as_storage_path

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from deyel_provider.extract.spec import OutputSpec

log = logging.getLogger(__name__)

#: A local staging folder of another run of the same output untouched this long is a failed run's: the
#: commit removes it (a run cleared after that reads its parts again; the commit says which).
STALE_STAGING_S = 7 * 86400


def staging_folder(output: OutputSpec, run_key: str) -> ObjectStoragePath:
    """Where the parts of one run of one group wait for the commit: a hidden folder beside the output,
    named after the output and the run (``run_key``: DAG, run, group)."""
    target = as_storage_path(output.output, output.output_conn_id)
    digest = hashlib.sha256(run_key.encode()).hexdigest()[:16]
    return target.parent / f".{target.name}.staging-{digest}"


def staged_part(output: OutputSpec, run_key: str, number: int) -> ObjectStoragePath:
    target = as_storage_path(output.output, output.output_conn_id)
    _, fmt_ext, compressed = split_name(target.name)
    return staging_folder(output, run_key) / f"part-{number:0{PART_DIGITS}d}{fmt_ext}{compressed}"


def own_staging(folder: ObjectStoragePath, *, create: bool) -> None:
    """Locally, refuse a staging folder that is not this user's own folder that only it can write (a link,
    or one another local user made or may write in: they could swap a part between its read and the
    commit); ``create``: make it (0700) when missing. Object stores have neither links nor owners."""
    if not publish.is_local(folder):
        return
    path = str(folder.path)
    if create:
        publish.check_output_folder(folder, parameter="output")  # no link of another user's on the way
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return  # nothing staged (an earlier commit published it all)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise DeyelConfigError(
            f"the staging folder {path!r} is not a folder of this worker's user that only it may write "
            f"(mode {stat.filemode(info.st_mode)}, uid {info.st_uid}): someone else made it or may swap its "
            f"parts; remove it, then clear the group's read tasks"
        )


def remove_stale_staging(output: OutputSpec, run_key: str) -> None:
    """Remove the local staging folders of this output's other runs that nothing touched for
    :data:`STALE_STAGING_S` (failed runs never committed): only folders of this user, never through a link
    (each removed through its descriptor). Object stores: left to the bucket's lifecycle rules."""
    target = as_storage_path(output.output, output.output_conn_id)
    if not publish.is_local(target):
        return
    prefix, own = f".{target.name}.staging-", staging_folder(output, run_key).name
    before = time.time() - STALE_STAGING_S
    try:
        dir_fd = publish.open_folder(target)
    except DeyelConfigError:
        return
    assert dir_fd is not None  # a local folder
    try:
        with os.scandir(dir_fd) as entries:
            names = [e.name for e in entries if e.name.startswith(prefix) and e.name != own]
        for name in names:
            try:
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                    continue
                folder_fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
                try:
                    with os.scandir(folder_fd) as inside:
                        touched = max(
                            [info.st_mtime, *(e.stat(follow_symlinks=False).st_mtime for e in inside)]
                        )
                finally:
                    os.close(folder_fd)
                if touched < before:
                    log.info("removing %s, the staging folder of a run that never committed", name)
                    shutil.rmtree(name, dir_fd=dir_fd)
            except OSError as exc:
                log.warning("could not remove the staging folder %s: %s", name, exc.strerror)
    finally:
        os.close(dir_fd)
