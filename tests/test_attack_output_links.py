"""A local attacker who can write in the output folder plants links and folders: the extraction never writes
through them, never moves its data into them, and is not stopped by leftovers that are not its own."""

from __future__ import annotations

import csv
import json
import os
import stat
import threading
import uuid

import pytest

from deyel_provider.exceptions import DeyelConfigError
from deyel_provider.extract.progress import Progress
from deyel_provider.extract.run import extract
from deyel_provider.extract.spec import OutputSpec, ReadSpec
from deyel_provider.hooks.deyel import DeyelHook

READ = ReadSpec("CRM_ACCOUNT")

VICTIM_TEXT = "ssh-ed25519 AAAA... victim@host\n"


@pytest.fixture
def shared_folder(tmp_path):
    """A folder like /tmp: anyone may create names in it."""
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o1777)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "authorized_keys").write_text(VICTIM_TEXT)
    return folder, victim


def _csv_count(path) -> int:
    with open(path, newline="", encoding="utf-8") as fh:
        return len(list(csv.DictReader(fh)))


#: The emulator fixture's 50 instances; an extraction writes them in (dtLastUpdate, id) order.
EVERY_ID = [str(i) for i in range(1, 51)]


def _records(path) -> list[str]:
    return sorted((json.loads(line)["idObjectValue"] for line in path.read_text().splitlines()), key=int)


def test_a_link_at_the_final_name_is_replaced_not_written_through(deyel_conn, shared_folder):
    folder, victim = shared_folder
    target = folder / "CRM_ACCOUNT.jsonl"
    target.symlink_to(victim / "authorized_keys")
    result = extract(DeyelHook(), READ, OutputSpec(str(target)))
    assert (victim / "authorized_keys").read_text() == VICTIM_TEXT
    assert not target.is_symlink() and stat.S_ISREG(target.lstat().st_mode)
    assert _records(target) == EVERY_ID
    assert result.path == target.as_uri()


@pytest.mark.parametrize("as_url", [False, True])
def test_a_link_to_a_folder_at_the_final_name_does_not_move_the_data_there(deyel_conn, shared_folder, as_url):
    folder, victim = shared_folder
    target = folder / "CRM_ACCOUNT.csv"
    target.symlink_to(victim, target_is_directory=True)
    extract(DeyelHook(), READ, OutputSpec(target.as_uri() if as_url else str(target), format="csv"))
    assert sorted(os.listdir(victim)) == ["authorized_keys"]
    assert stat.S_ISREG(target.lstat().st_mode)
    assert _csv_count(target) == 50


def test_a_planted_link_at_the_temporary_name_is_never_followed(deyel_conn, shared_folder, monkeypatch):
    """Even an attacker who guesses the random temporary name only makes the provider pick another one."""
    folder, victim = shared_folder
    guessed = uuid.UUID(int=7)
    planted = folder / f"CRM_ACCOUNT.csv.tmp-{guessed.hex}"
    planted.symlink_to(victim / "authorized_keys")
    names = iter([guessed])
    real_uuid4 = uuid.uuid4
    monkeypatch.setattr(uuid, "uuid4", lambda: next(names, None) or real_uuid4())
    # CSV with a field that first appears late: the widening pass creates a second temporary file.
    extract(DeyelHook(), READ, OutputSpec(str(folder / "CRM_ACCOUNT.csv"), format="csv"))
    assert (victim / "authorized_keys").read_text() == VICTIM_TEXT
    assert planted.is_symlink()  # not ours: left alone
    assert _csv_count(folder / "CRM_ACCOUNT.csv") == 50


def test_leftovers_that_are_not_ours_are_ignored_not_fatal(deyel_conn, shared_folder, caplog):
    folder, victim = shared_folder
    (folder / "out.jsonl.tmp-x").mkdir()
    (folder / "out.jsonl.tmp-link").symlink_to(victim / "authorized_keys")
    os.mkfifo(folder / "out.jsonl.tmp-fifo")
    ours = folder / "out.jsonl.tmp-0123"
    ours.write_text("partial")
    extract(DeyelHook(), READ, OutputSpec(str(folder / "out.jsonl")))
    assert _records(folder / "out.jsonl") == EVERY_ID
    assert not ours.exists()  # our own leftover is removed
    assert sorted(os.listdir(folder)) == [
        "out.jsonl",
        "out.jsonl.tmp-fifo",
        "out.jsonl.tmp-link",
        "out.jsonl.tmp-x",
    ]
    assert (victim / "authorized_keys").read_text() == VICTIM_TEXT
    assert sum("not a temporary file of this provider" in r.getMessage() for r in caplog.records) == 3


def test_the_temporary_file_is_private_while_it_is_written(deyel_conn, tmp_path):
    """Another user must not read records before the run publishes them: 0600 while writing."""
    modes: list[int] = []

    class Watcher:
        """A logger that looks at the temporary file each time a progress line is written."""

        def info(self, *args: object) -> None:
            modes.extend(p.stat().st_mode & 0o777 for p in tmp_path.glob("x.jsonl.tmp-*"))

        warning = info

    extract(
        DeyelHook(),
        ReadSpec("CRM_ACCOUNT", page_size=10),
        OutputSpec(str(tmp_path / "x.jsonl")),
        progress=Progress(1e-9, Watcher()),
    )
    assert modes and set(modes) == {0o600}
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "x.jsonl").stat().st_mode & 0o777 == 0o666 & ~mask  # published as a normal file


def test_a_folder_planted_at_the_final_name_is_an_error_not_a_destination(deyel_conn, shared_folder):
    folder, _ = shared_folder
    planted = folder / "CRM_ACCOUNT.jsonl"
    planted.mkdir()
    with pytest.raises(DeyelConfigError, match="is a folder; nothing was written into it"):
        extract(DeyelHook(), READ, OutputSpec(str(planted)))
    assert os.listdir(planted) == []
    assert sorted(os.listdir(folder)) == ["CRM_ACCOUNT.jsonl"]  # and no temporary file left beside it


def test_a_folder_link_planted_by_another_user_is_not_followed(deyel_conn, shared_folder, tmp_path):
    """``/tmp/exports -> ~victim/...`` planted by someone else: the data must not move into its target. A link
    of one's own (``/data -> /mnt/data``) is followed as usual."""
    folder, victim = shared_folder
    mine = folder / "mine"
    real = tmp_path / "real-exports"
    real.mkdir()
    mine.symlink_to(real, target_is_directory=True)
    extract(DeyelHook(), READ, OutputSpec(str(mine / "data.jsonl")))
    assert _records(real / "data.jsonl") == EVERY_ID
    if os.getuid() != 0:
        return  # only root can make a link that belongs to another user
    planted = folder / "exports"
    planted.symlink_to(victim, target_is_directory=True)
    os.lchown(planted, 65534, 65534)
    with pytest.raises(DeyelConfigError, match="a link made by another user"):
        extract(DeyelHook(), READ, OutputSpec(str(planted / "authorized_keys"), format="csv"))
    assert (victim / "authorized_keys").read_text() == VICTIM_TEXT
    assert sorted(os.listdir(victim)) == ["authorized_keys"]


@pytest.mark.parametrize("planted", ["fifo", "link to a fifo", "link to a manifest"])
def test_a_fifo_or_link_at_the_old_manifest_name_neither_hangs_nor_is_read(
    deyel_conn, shared_folder, tmp_path, caplog, planted
):
    """Review R4: a split run reads an old-style ``<stem>.parts.json`` to decide whether it is its own. A FIFO
    planted there blocked that read forever; a link made the run read (and judge) what it points to."""
    folder, victim = shared_folder
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    # A body that would be removed as ours if read: it lists only this output's first part.
    (victim / "manifest.json").write_text(json.dumps({"parts": [{"name": "day.part-00000.jsonl.gz"}]}))
    legacy = folder / "day.parts.json"
    if planted == "fifo":
        os.mkfifo(legacy)
    else:
        legacy.symlink_to(fifo if planted == "link to a fifo" else victim / "manifest.json")
    result: dict[str, object] = {}

    def run() -> None:
        try:
            target = str(folder / "day.jsonl.gz")
            hook = DeyelHook()
            result["ok"] = extract(hook, READ, OutputSpec(target, compression="gzip", max_file_bytes=4096))
        except Exception as exc:  # reported by the assertion below
            result["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(60)  # returns as soon as the run ends; the bound only matters when it hangs
    hung = worker.is_alive()
    if hung:  # unblock the read (a writer that closes at once: end of file) so the process can end
        os.close(os.open(fifo if planted == "link to a fifo" else legacy, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(60)
    assert not hung, "the run blocked on the planted FIFO"
    assert "error" not in result, result
    assert os.path.lexists(legacy)  # not ours: left alone
    assert json.loads((folder / "day.jsonl.gz.parts.json").read_text())["records"] == 50
    warned = [r.getMessage() for r in caplog.records if "leaving day.parts.json alone" in r.getMessage()]
    assert len(warned) == 1
