"""A local attacker and the file token cache: a folder that is not the user's own or that others can write is
refused (warning, then a direct fetch); a FIFO, a link to /dev/zero, a huge file or a link planted under an
entry's or the lock's name is a cache fault, never a hung task, an exhausted worker or a clobbered file."""

from __future__ import annotations

import logging
import os
import resource
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import pytest

from deyel_provider.hooks.deyel import DeyelHook


@pytest.fixture
def file_cache(deyel_conn, tmp_path):
    folder = tmp_path / "token-cache"
    folder.mkdir(mode=0o700)
    deyel_conn(extra={"cache": "file", "cache_dir": str(folder)})
    return folder


def _get_token_within(timeout: float) -> list[str]:
    got: list[str] = []
    worker = threading.Thread(target=lambda: got.append(DeyelHook().get_token()), daemon=True)
    worker.start()
    worker.join(timeout)
    return got


def test_a_folder_writable_by_others_is_refused(emulator, file_cache, caplog):
    file_cache.chmod(0o777)
    with caplog.at_level(logging.WARNING):
        assert DeyelHook().get_token()
    assert "writable by others: refused" in caplog.text
    assert os.listdir(file_cache) == []  # nothing written where others could read or swap it
    assert emulator.stats()["token_requests"] == 1


def test_a_folder_of_another_user_is_refused(emulator, deyel_conn, tmp_path, caplog):
    if os.getuid() == 0:
        folder = tmp_path / "theirs"
        folder.mkdir(mode=0o700)
        os.chown(folder, 65534, 65534)  # as if another user had created it first
    else:
        folder = Path("/")  # root's: exists, not ours
    deyel_conn(extra={"cache": "file", "cache_dir": str(folder)})
    with caplog.at_level(logging.WARNING):
        assert DeyelHook().get_token()
    assert "belongs to another user: refused" in caplog.text
    assert not list(folder.glob("deyel-token-*"))


def test_a_fifo_planted_as_the_entry_does_not_hang_the_task(emulator, file_cache, caplog):
    os.mkfifo(file_cache / f"{DeyelHook().credential_key}.token")
    with caplog.at_level(logging.WARNING):
        got = _get_token_within(30)
    assert got, "reading the token cache hung on a FIFO"
    assert "not a regular file of this user: refused" in caplog.text
    assert emulator.stats()["token_requests"] == 1


def test_a_huge_entry_is_not_read(emulator, file_cache, caplog):
    entry = file_cache / f"{DeyelHook().credential_key}.token"
    with open(entry, "wb") as fh:
        fh.truncate(256 * 1024 * 1024)  # sparse: costs no disk, would cost 256 MiB of memory to read
    tracemalloc.start()
    try:
        with caplog.at_level(logging.WARNING):
            assert DeyelHook().get_token()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 * 1024 * 1024, peak
    assert "larger than a token entry: refused" in caplog.text


def test_a_link_to_dev_zero_does_not_exhaust_memory(emulator, file_cache):
    """In a child process with a 1.5 GiB address-space limit: reading /dev/zero whole would hit it."""
    (file_cache / f"{DeyelHook().credential_key}.token").symlink_to("/dev/zero")
    code = "from deyel_provider.hooks.deyel import DeyelHook\nprint(len(DeyelHook().get_token()) > 0)\n"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (3 << 29, 3 << 29))

    try:
        run = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, preexec_fn=limit
        )
    except subprocess.TimeoutExpired:
        pytest.fail("reading the token cache did not finish")
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().endswith("True")
    assert (
        "refused" in run.stdout + run.stderr or "Too many levels of symbolic links" in run.stdout + run.stderr
    )


def test_a_linked_lock_file_never_touches_its_target(emulator, file_cache, tmp_path, caplog):
    victim = tmp_path / "victim.conf"
    victim.write_text("precious\n")
    victim.chmod(0o644)
    (file_cache / f"{DeyelHook().credential_key}.lock").symlink_to(victim)
    with caplog.at_level(logging.WARNING):
        assert DeyelHook().get_token()
    assert victim.read_text() == "precious\n"
    assert victim.stat().st_mode & 0o777 == 0o644
    assert "file token cache" in caplog.text
