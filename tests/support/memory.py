"""Peak memory: traced around a block (tracemalloc), for the bomb tests; a child's own peak RSS (VmHWM) for
the deletes comparison of millions of ids."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def peak_memory() -> Iterator[list[int]]:
    peak: list[int] = []
    tracemalloc.start()
    try:
        yield peak
    finally:
        peak.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


#: The stated bound (docs/extraction.md, "Memory"): one comparison of 10M ids with a snapshot of 10M
#: (checking the previous snapshot, listing the ids, spilling and merging the runs, the merge-join, writing
#: the output and the new snapshot) raises the child's peak RSS by less than this, for UUIDs and for Deyel's
#: decimal sequence alike (measured on a loaded 2-core machine: UUIDs 22 MB, decimals 4 MB).
COMPARE_BOUND_MB = 64

#: A child that compares ``N`` ids of ``KIND`` (uuid, decimal, ten-digit; uuid+bitmap: UUIDs and, listed now,
#: the largest id the bitmap holds, the documented worst case; generated, no HTTP) with a snapshot
#: of ``N`` through DeyelDeletedInstancesOperator's engine (every thousandth old id gone, ``N // 2000`` new)
#: and prints, as JSON, its counts and its peak RSS growth (VmHWM, reset after the previous snapshot exists
#: by writing 5 to /proc/self/clear_refs, less VmRSS then), and the modules it loaded since (none: Airflow's
#: lazy loading is done before, see the child).
_COMPARE_CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    from array import array
    from binascii import hexlify
    from functools import lru_cache
    from itertools import chain, islice, repeat
    from operator import mod

    from airflow.sdk import ObjectStoragePath

    from deyel_provider.extract.deletes import DeletesSpec, compare_and_publish, open_previous
    from deyel_provider.read.id_runs import BLOCK_IDS, CurrentIds
    from deyel_provider.read.id_snapshot import Identity, SnapshotCodec, Stamp
    from deyel_provider.read.id_snapshot_body import BodyWriter

    N, KIND, FOLDER = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    M = N + N // 2000  # N // 2000 new ids, numbered past the old ones
    # Number n's UUID is "%08x-7d3c-4a1b-9e2f-%012x" % (n, n * 0x9E3779B97F4A7C15 & (2**48 - 1)), made
    # CHUNK ids at a time in C (uuids(): a third of the time of formatting each), so the child's time goes to
    # the comparison.
    TEMPLATE = b"00000000-7d3c-4a1b-9e2f-000000000000\\n"
    WIDTH, CHUNK = len(TEMPLATE), 1024

    @lru_cache(maxsize=2)  # CHUNK and the last chunk's count
    def low48(count):  # each 96-bit lane's low 48 bits
        return int.from_bytes((b"\\0" * 6 + b"\\xff" * 6) * count, "big")

    def uuids(numbers, text):
        # The numbers' hex from one hexlify; n * K for all of them in one multiplication of the numbers laid
        # in 96-bit lanes (a product fits its lane: below 2**88); the digits set a column at a time.
        count = len(numbers)
        heads = array("I", numbers)
        if sys.byteorder == "little":
            heads.byteswap()
        lanes = array("I", bytes(12 * count))
        lanes[2::3] = heads
        tails = (int.from_bytes(lanes, "big") * 0x9E3779B97F4A7C15 & low48(count)).to_bytes(12 * count, "big")
        head_hex, tail_hex = hexlify(heads), hexlify(tails)
        lines = bytearray(TEMPLATE * count)
        for column in range(8):
            lines[column::WIDTH] = head_hex[column::8]
        for column in range(12):
            lines[24 + column :: WIDTH] = tail_hex[12 + column :: 24]
        del lines[-1:]
        return lines.decode().split("\\n") if text else bytes(lines).split(b"\\n")

    def ids(numbers, text=True):
        if KIND == "decimal":
            return map(str, map((1).__add__, numbers))  # 1, 2, ...: Deyel's sequence
        if KIND == "ten-digit":
            tens = map(str, map((1_000_000_000).__add__, numbers))  # a sequence past the bitmap
            return tens if text else map(str.encode, tens)
        ahead = iter(numbers)
        return chain.from_iterable(map(uuids, iter(lambda: list(islice(ahead, CHUNK)), []), repeat(text)))

    def shuffled(n):  # every number below n once, scattered (a listing is not in id order): k * 7,919,993 % n
        return map(mod, range(0, n * 7_919_993, 7_919_993), repeat(n))  # the products made by range()

    def status_mb(key):
        with open("/proc/self/status") as status:
            return int(next(line for line in status if line.startswith(key + ":")).split()[1]) / 1024

    codec = SnapshotCodec("secret", "http://x/oauth/token", "client")
    identity = Identity("http://x", "client", "F", "", "id")
    spec = DeletesSpec(
        form="F",
        output=ObjectStoragePath(f"file://{FOLDER}/gone.jsonl"),
        snapshot=ObjectStoragePath(f"file://{FOLDER}/ids.snapshot"),
        run_id="r2",
        spill_dir=FOLDER,
    )
    # The previous snapshot of N ids, written straight (they are sorted already); scrypt done meanwhile.
    with open(f"{FOLDER}/body", "wb") as body:
        writer = BodyWriter(body)
        if KIND == "decimal":
            writer.bitmap(((1 << (N + 1)) - 2).to_bytes(N // 8 + 1, "little"))
        else:
            writer.bitmap(b"")
            ahead = ids(range(N), text=False)
            for block in iter(lambda: list(islice(ahead, BLOCK_IDS)), []):
                writer.block(block)
        facts = writer.finish()
    with open(f"{FOLDER}/ids.snapshot", "wb") as out, open(f"{FOLDER}/body", "rb") as body:
        out.write(codec.header_line(Stamp(identity, 1000, 1000, "r1", 0, 1000), facts))
        while chunk := body.read(1 << 20):
            out.write(chunk)
    os.unlink(f"{FOLDER}/body")

    # A process's first use of a path's filesystem: Airflow 3.0 loads its providers manager then (543 modules,
    # 33 MB, whatever the ids; 3.3 has nothing left to load). Resolved before the baseline, so the peak is the
    # comparison's; "imported" lists any module loaded after it.
    spec.output.fs, spec.snapshot.fs
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # the peak (VmHWM) starts again from here
    base = status_mb("VmRSS")
    loaded = set(sys.modules)
    started = time.monotonic()
    previous = open_previous(spec, codec, identity)
    with CurrentIds(FOLDER) as current:
        current.update(ids(filter((1000).__rmod__, shuffled(M))))  # every thousandth old id is gone
        if KIND == "uuid+bitmap":
            current.add(str(2**28 - 1))  # one id: a bitmap of 32 MiB beside the run buffer
        result = compare_and_publish(spec, codec, identity, previous, current, 2000, 2000)
        runs = current.runs_written
    previous.source.close()
    peak = status_mb("VmHWM") - base
    imported = sorted(set(sys.modules) - loaded)
    seconds = time.monotonic() - started
    with open(f"{FOLDER}/gone.jsonl") as lines:
        gone = [json.loads(line)["id"] for line in lines]
    print(json.dumps({
        "listed": result.listed, "previous": result.previous, "gone": result.gone,
        "gone_exact": gone == list(ids(range(0, N, 1000))), "runs": runs,
        "peak_mb": round(peak, 1), "seconds": round(seconds, 1),
        "snapshot_bytes": os.path.getsize(f"{FOLDER}/ids.snapshot"), "imported": imported,
    }))
    """
)


def compare_in_child(kind: str, folder: Path, n: int) -> dict:
    """Run :data:`_COMPARE_CHILD` in a fresh interpreter (the environment's PYTHONPATH reaches it)."""
    done = subprocess.run(
        [sys.executable, "-c", _COMPARE_CHILD, str(n), kind, str(folder)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict = json.loads(done.stdout.splitlines()[-1])
    return result
