"""The loader on real packed shards: checksums verified by default, once per process; a damaged shard
is refused with an error naming it, with or without DataLoader workers; `verify=False` opts out."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from curation.manifest import build_manifest
from curation.tokenizer import shards as shards_module
from curation.tokenizer.shards import ShardError
from pack_helpers import pack, small_tokenizer, write_inputs

torch = pytest.importorskip("torch")
from curation import loader as loader_module  # noqa: E402
from curation.loader import PhaseLoader  # noqa: E402

SEQ_LEN = 128


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("loader")
    tokenizer = small_tokenizer(folder / "tok")
    write_inputs(folder / "in")
    assert pack(tokenizer, folder / "packed", folder / "in", "--seq-len", str(SEQ_LEN)) == 0
    return folder / "packed"


def _manifest(root: Path, out: Path) -> Path:
    summary = json.loads((root / "pack.json").read_text())
    tokens = summary["sources"]["default"]["sequences"] * SEQ_LEN
    phases = out / "phases.yaml"
    phases.write_text(yaml.safe_dump({"root": str(root), "seed": 0, "sources": {"default": {}},
                                      "phases": [{"name": "p1", "tokens": tokens, "seed": 1, "weights": {"default": 1.0}}]}))
    build_manifest(phases, out / "manifest.json")
    return out / "manifest.json"


@pytest.fixture()
def damaged(packed, tmp_path) -> tuple[Path, Path]:
    """A copy of the packed output with one byte of a real shard's tokens flipped after the manifest
    was built; returns (manifest, the damaged .bin)."""
    root = tmp_path / "packed"
    shutil.copytree(packed, root)
    manifest = _manifest(root, tmp_path)
    target = sorted(p for p in (root / "default").glob("*.bin") if not p.name.startswith("_"))[0]
    raw = bytearray(target.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    target.write_bytes(bytes(raw))
    getattr(loader_module, "_VERIFIED", set()).clear()  # this process has not seen the damaged file
    return manifest, target


def test_loader_refuses_a_flipped_byte_by_default(damaged):
    manifest, target = damaged
    with pytest.raises(ShardError, match="sha256 does not match") as error:
        list(PhaseLoader(manifest, "p1", batch_size=4))
    assert str(target) in str(error.value)


def test_loader_refuses_a_flipped_byte_with_workers(damaged):
    """Checked in the loader's own process before the workers start: the error is the ShardError
    itself, not a worker's wrapped traceback."""
    manifest, target = damaged
    with pytest.raises(ShardError, match="sha256 does not match") as error:
        list(PhaseLoader(manifest, "p1", batch_size=4, num_workers=1))
    assert str(target) in str(error.value) and "Traceback" not in str(error.value)


def test_verify_false_serves_the_shard(damaged):
    manifest, _ = damaged
    batches = list(PhaseLoader(manifest, "p1", batch_size=4, verify=False))
    assert sum(b["input_ids"].shape[0] for b in batches) == len(PhaseLoader(manifest, "p1", verify=False).dataset.plan)


def test_each_shard_is_hashed_once_per_process(packed, tmp_path, monkeypatch):
    manifest = _manifest(packed, tmp_path)
    loader_module._VERIFIED.clear()
    hashed = []
    real = shards_module.sha256_file
    monkeypatch.setattr(shards_module, "sha256_file", lambda path, *a, **k: hashed.append(Path(path).name) or real(path, *a, **k))
    first = [b["input_ids"] for b in PhaseLoader(manifest, "p1", batch_size=4)]
    names = sorted(hashed)
    shard_count = len(json.loads((packed / "pack.json").read_text())["sources"]["default"]["shards"])
    assert len(names) == 2 * shard_count and len(set(names)) == len(names)  # every .bin and index, once
    second = [b["input_ids"] for b in PhaseLoader(manifest, "p1", batch_size=4, num_workers=1)]
    assert sorted(hashed) == names  # a second loader (and its worker) hashes nothing again
    assert all(torch.equal(x, y) for x, y in zip(first, second)) and len(first) == len(second)
