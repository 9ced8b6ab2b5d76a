"""The local-file blob store behind large pastes (blueprint.infra.blobs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from blueprint.infra.blobs import BlobNotFound, LocalBlobStore, check_key


async def test_put_get_replace_delete(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    await store.put("pastes/abc", b"one")
    assert await store.get("pastes/abc") == b"one"
    await store.put("pastes/abc", b"two")
    assert await store.get("pastes/abc") == b"two"
    assert await store.delete("pastes/abc") is True
    assert await store.delete("pastes/abc") is False
    with pytest.raises(BlobNotFound):
        await store.get("pastes/abc")
    # Written by rename: no temporary file is left behind.
    assert [p.name for p in (tmp_path / "blobs" / "pastes").iterdir()] == []


@pytest.mark.parametrize(
    "key",
    ["", "../outside", "pastes/../../etc/passwd", "/absolute", "a//b", "a/./b", ".hidden",
     "a\\b", "a b", "x" * 513, "pastes/\x00"],
)  # fmt: skip
def test_keys_cannot_leave_the_store(key: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        check_key(key)
    with pytest.raises(ValueError):
        LocalBlobStore(tmp_path).path(key)


def test_good_keys(tmp_path: Path) -> None:
    assert check_key("pastes/7kTq0xA2Bc") == "pastes/7kTq0xA2Bc"
    assert LocalBlobStore(tmp_path).path("a/b.c_d-e") == tmp_path / "a" / "b.c_d-e"
