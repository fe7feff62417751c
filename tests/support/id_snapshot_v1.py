"""A version-1 id snapshot, written by the code of f64c678 (before the comparison streamed), kept byte for
byte: a snapshot a deployment stored before upgrading must still be read (tests/test_deletes_streaming.py).

Written with ``SnapshotCodec(CLIENT_SECRET, V1_TOKEN_URL, CLIENT_ID).encode(Snapshot(build(V1_IDS),
V1_IDENTITY, 2000, 2000, "run-7", 2, 1990, (V1_RUN,)))``.
"""

from __future__ import annotations

import base64

from deyel_provider.read.id_snapshot import Identity
from tests.support.helpers import CLIENT_ID

V1_TOKEN_URL = "http://deyel.example/oauth/token"
V1_IDENTITY = Identity(
    "http://deyel.example", CLIENT_ID, "CRM_ACCOUNT", "cdCountry=eq:AR", "idObjectValue", "dag.deletes"
)
#: Bitmap ids, decimals past the bitmap or not canonical, UUIDs, prefixed ids, escapes, non-ASCII text, a
#: lone surrogate (JSON can carry one), a blank.
V1_IDS = [
    "1",
    "2",
    "3",
    "9",
    "10",
    "12",
    "255",
    "256",
    "4096",
    "268435456",
    "1000000001",
    "07",
    "0",
    "x",
    "1e3",
    "AR-17",
    "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
    "c9bf9e57-1685-4c89-bafb-ff5af830be8a",
    "ñandú",
    "日本",
    'with "quote" and \\ and \n newline',
    "😀",
    "\ud800",
    "",
    " ",
]
V1_RUN = {
    "gone": 2,
    "listed": len(V1_IDS),
    "previous": 28,
    "gone_after": 1000,
    "gone_by": 2000,
    "output": "file:///data/gone-run-7.jsonl",
    "snapshot": "file:///data/ids.snapshot",
    "rerun": False,
    "snapshot_replaced": True,
    "run_id": "run-7",
    "sha256": "0" * 64,
}
V1_SNAPSHOT = base64.b64decode(
    "eyJib2R5X2J5dGVzIjogNzY1LCAiYm9keV9zaGEyNTYiOiAiYjczM2M4MzczMjRmMWU3ZjIzNTdhMTBkM2U4YzBkZjIzMjgxZGRh"
    "ODZiYTE4OWE0NGE4NzljY2MyOWNhNmM1MCIsICJjb21wcmVzc2VkX2J5dGVzIjogMTkyLCAiY291bnQiOiAyNSwgImZpbmlzaGVk"
    "X21zIjogMjAwMCwgImZvcm1hdCI6ICJkZXllbC1pZC1zbmFwc2hvdCIsICJnb25lIjogMiwgImlkZW50aXR5IjogeyJiYXNlX3Vy"
    "bCI6ICJodHRwOi8vZGV5ZWwuZXhhbXBsZSIsICJjbGllbnRfaWQiOiAiREVZRUxCT1QiLCAiZm9ybSI6ICJDUk1fQUNDT1VOVCIs"
    "ICJpZF9maWVsZCI6ICJpZE9iamVjdFZhbHVlIiwgIm93bmVyIjogImRhZy5kZWxldGVzIiwgInNlYXJjaCI6ICJjZENvdW50cnk9"
    "ZXE6QVIifSwgImxpc3RlZF9hdF9tcyI6IDE5OTAsICJtYWMiOiAiODA4Y2QxMjRhNzI2NDg5YzFjODI4MjNiMzNhMGE2YmQ0OWQz"
    "NjYwMWZhMDc0MDdkYjUwNWE5YjA4MjU0ODg2MiIsICJydW5faWQiOiAicnVuLTciLCAicnVucyI6IFt7ImdvbmUiOiAyLCAiZ29u"
    "ZV9hZnRlciI6IDEwMDAsICJnb25lX2J5IjogMjAwMCwgImxpc3RlZCI6IDI1LCAib3V0cHV0IjogImZpbGU6Ly8vZGF0YS9nb25l"
    "LXJ1bi03Lmpzb25sIiwgInByZXZpb3VzIjogMjgsICJyZXJ1biI6IGZhbHNlLCAicnVuX2lkIjogInJ1bi03IiwgInNoYTI1NiI6"
    "ICIwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwIiwgInNuYXBz"
    "aG90IjogImZpbGU6Ly8vZGF0YS9pZHMuc25hcHNob3QiLCAic25hcHNob3RfcmVwbGFjZWQiOiB0cnVlfV0sICJzdGFydGVkX21z"
    "IjogMjAwMCwgInYiOiAxfQp4nO2MMQ7CMAxFWy7AxhxlJpJTx206cgVWwpCmjqiEipCKYOToJC2s7Ei84dvf/nZRZFblelN841l+"
    "Xf/5dcqDlFshRRZosmp4o2fHmEtVW4NkqM4GY0VgGJSJtlVa96haD0EBArGtAuJyu9srPb8MbRdbpkbp2pIyIV11PnYqRvLRInRs"
    "fc7dh+kknLzeLhM7KfzYC+eWMoqR7+dh5Jx7ZHE3gKjTcm78MqqJKWlThcX3FuDTYUr2nPzxBa+xPgY="
)
