"""Phase manifests and the loader: allocation, disjoint phases, exact-once reading over ranks and
workers, resumption (also elastic), mixture, batch contents, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curation.cli import main as cli_main
from curation.manifest import ManifestError, build_manifest, load_manifest, sequence_order, validate
from curation.tokenizer import packing
from curation.tokenizer.shards import ShardError, write_shard

torch = pytest.importorskip("torch")
from curation.loader import IGNORE_INDEX, PhaseDataset, PhaseLoader  # noqa: E402

SEQ_LEN = 64
SEP, PAD = 3, 2


def _write_source(root: Path, source: str, n_docs: int, shards: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for k in range(shards):
        docs = [rng.integers(10, 60000, int(n)).astype(np.uint16) for n in rng.integers(1, 150, n_docs)]
        flat, offsets = packing.with_separators(docs, SEP)
        packed, _ = packing.pack_concat(flat, offsets, SEQ_LEN)
        ids = [f"{source}-{k}-{i}" for i in range(n_docs)]
        write_shard(root / source, f"part{k}", packed, ids, source=source, seq_len=SEQ_LEN, strategy="concat",
                    sep_id=SEP, pad_id=PAD, tokenizer_sha256="t" * 64)


@pytest.fixture(scope="module")
def packed_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("packed")
    _write_source(root, "web", 300, 3, 1)
    _write_source(root, "wiki", 120, 2, 2)
    _write_source(root, "code", 60, 1, 3)
    return root


def _phases(folder: Path, root: Path, phases: list[dict], sources=None, **extra) -> Path:
    config = {"root": str(root), "seed": 5, "sources": sources or {"web": {}, "wiki": {}, "code": {"max_epochs": 3}},
              "phases": phases, **extra}
    path = folder / "phases.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _manifest(tmp_path: Path, root: Path, phases: list[dict], **kwargs) -> Path:
    out = tmp_path / "manifest.json"
    build_manifest(_phases(tmp_path, root, phases, **kwargs), out)
    return out


TWO_PHASES = [{"name": "p1", "tokens": 120 * SEQ_LEN, "seed": 1, "weights": {"web": 0.7, "wiki": 0.2, "code": 0.1}},
              {"name": "p2", "tokens": 100 * SEQ_LEN, "seed": 2, "weights": {"web": 0.3, "wiki": 0.4, "code": 0.3}}]


def test_sequence_order_is_a_fixed_permutation():
    order = sequence_order(1000, 42)
    assert sorted(order.tolist()) == list(range(1000))
    assert np.array_equal(order, sequence_order(1000, 42)) and not np.array_equal(order, sequence_order(1000, 43))
    # pinned: the order must never change between versions (a resumed job reads the same sequences)
    assert sequence_order(10, 7).tolist() == [3, 4, 9, 0, 7, 8, 5, 1, 2, 6]


def _read_all(manifest: Path, phase: str, world_size: int, workers: int, batch_size: int, cursor: int = 0):
    """(shard path, row) of every sequence read, over ranks and (simulated) workers, in rank order."""
    seen = []
    for rank in range(world_size):
        ds = PhaseDataset(manifest, phase, rank=rank, world_size=world_size, batch_size=batch_size)
        ds.cursor = cursor
        batches = [list(ds.worker_batches(w, workers)) for w in range(workers)]
        for b in range(max(len(x) for x in batches) if batches else 0):
            for w in range(workers):  # the DataLoader's round robin
                if b < len(batches[w]):
                    for g in batches[w][b]:
                        seen.append((ds.plan.shards[ds.plan.shard_of[g]][1], ds.plan.source_of[g], int(ds.plan.row_of[g]), int(g)))
    return seen


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(1, 5), st.integers(1, 4), st.integers(1, 7))
def test_every_allocated_sequence_read_exactly_once(packed_root, tmp_path, world_size, workers, batch_size):
    manifest = _manifest(tmp_path, packed_root, TWO_PHASES)
    data = json.loads(manifest.read_text())
    for phase in data["phases"]:
        seen = _read_all(manifest, phase["name"], world_size, workers, batch_size)
        positions = sorted(g for *_, g in seen)
        assert positions == list(range(phase["sequences"]))  # the union is the allocation, no repeats


def _allocated(manifest_path: Path, phase_name: str) -> set[tuple[str, int, int]]:
    ds = PhaseDataset(manifest_path, phase_name)
    return {(str(ds.plan.shards[s][0].name) + "/" + ds.plan.shards[s][1], int(r), 0)
            for s, r in zip(ds.plan.shard_of, ds.plan.row_of)}


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(5, 60), st.floats(0.05, 0.95)), min_size=2, max_size=4))
def test_phases_are_disjoint_whatever_the_ratios(packed_root, tmp_path, phases):
    spec = [{"name": f"p{i}", "tokens": n * SEQ_LEN, "seed": i, "weights": {"web": round(w, 3), "wiki": round(1 - round(w, 3), 3)}}
            for i, (n, w) in enumerate(phases)]
    try:
        manifest = _manifest(tmp_path, packed_root, spec)
    except ManifestError as exc:
        assert "runs out" in str(exc)
        return
    sets = [_allocated(manifest, p["name"]) for p in spec]
    for i in range(len(sets)):
        assert len(sets[i]) == len(PhaseDataset(manifest, spec[i]["name"]).plan)  # no repeat inside a phase
        for j in range(i):
            assert not sets[i] & sets[j]


def test_mixture_follows_the_weights(packed_root, tmp_path):
    manifest = _manifest(tmp_path, packed_root, TWO_PHASES)
    for phase in TWO_PHASES:
        ds = PhaseDataset(manifest, phase["name"])
        names = [ds.plan.source_names[i] for i in ds.plan.source_of]
        total = len(names)
        for source, weight in phase["weights"].items():
            assert abs(names.count(source) / total - weight) <= 0.01
        # every prefix is mixed too (stride scheduling), not source after source
        half = names[:total // 2]
        for source, weight in phase["weights"].items():
            assert abs(half.count(source) / len(half) - weight) <= 0.03


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 5), st.integers(0, 30))
def test_resume_with_another_world_size_reads_the_rest_once(packed_root, tmp_path, old_world, new_world, batch_size, steps):
    manifest = _manifest(tmp_path, packed_root, TWO_PHASES)
    loaders = [PhaseLoader(manifest, "p1", rank=r, world_size=old_world, batch_size=batch_size) for r in range(old_world)]
    iters = [iter(loader) for loader in loaders]
    read = []
    for _ in range(steps):  # ranks step together
        for it in iters:
            batch = next(it, None)
            if batch is not None:
                read.append(batch["input_ids"])
    states = [loader.state_dict() for loader in loaders]
    assert len({s["cursor"] for s in states}) == 1
    resumed = [PhaseLoader(manifest, "p1", rank=r, world_size=new_world, batch_size=batch_size) for r in range(new_world)]
    for loader in resumed:
        loader.load_state_dict(states[0])
        read.extend(batch["input_ids"] for batch in loader)
    got = np.concatenate([t.numpy() for t in read]) if read else np.zeros((0, SEQ_LEN))
    whole = np.concatenate([b["input_ids"].numpy() for b in PhaseLoader(manifest, "p1", batch_size=64)])
    # every sequence of the phase once: same multiset of rows
    assert len(got) == len(whole)
    assert sorted(map(bytes, got.astype(np.uint16))) == sorted(map(bytes, whole.astype(np.uint16)))


def test_resumption_gives_the_same_stream_with_dataloader_workers(packed_root, tmp_path):
    manifest = _manifest(tmp_path, packed_root, TWO_PHASES)
    straight = [b["input_ids"] for b in PhaseLoader(manifest, "p2", batch_size=4, num_workers=2)]
    first = PhaseLoader(manifest, "p2", batch_size=4, num_workers=3)
    got = []
    for i, batch in enumerate(first):
        got.append(batch["input_ids"])
        if i == 6:
            break
    state = first.state_dict()
    second = PhaseLoader(manifest, "p2", batch_size=4, num_workers=1)
    second.load_state_dict(json.loads(json.dumps(state)))  # states are plain JSON
    got.extend(b["input_ids"] for b in second)
    assert len(got) == len(straight)
    for a, b in zip(got, straight):
        assert torch.equal(a, b)
    assert second.state_dict()["cursor"] == state["sequences"]


def test_batch_contents_follow_the_document_boundaries(packed_root, tmp_path):
    manifest = _manifest(tmp_path, packed_root, TWO_PHASES)
    ds = PhaseDataset(manifest, "p1", batch_size=5)
    batch = next(iter(ds))
    ids, labels, pos, cu = batch["input_ids"], batch["labels"], batch["position_ids"], batch["cu_seqlens"]
    assert ids.dtype == torch.int64 and ids.shape == (5, SEQ_LEN)
    flat_ids, flat_labels, flat_pos = ids.reshape(-1), labels.reshape(-1), pos.reshape(-1)
    assert cu[0] == 0 and cu[-1] == 5 * SEQ_LEN and torch.all(cu[1:] > cu[:-1])
    for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()):
        assert flat_pos[a:b].tolist() == list(range(b - a))  # positions restart at every segment
        assert flat_labels[a] == IGNORE_INDEX  # nothing predicted across a boundary
        assert torch.equal(flat_labels[a + 1:b], flat_ids[a + 1:b])
        assert a % SEQ_LEN + (b - a) <= SEQ_LEN  # no segment crosses a sequence
    # every separator ends a segment (concat: documents end with it)
    sep_positions = torch.nonzero(flat_ids == SEP).reshape(-1) + 1
    assert set(sep_positions.tolist()) <= set(cu.tolist())
    assert batch["max_seqlen"] == int((cu[1:] - cu[:-1]).max())


def test_pinned_batches(packed_root, tmp_path):
    manifest = _manifest(tmp_path, packed_root, TWO_PHASES)
    if not torch.cuda.is_available():
        pytest.skip("pinned memory needs a CUDA device")
    batch = next(iter(PhaseLoader(manifest, "p1", pin_memory=True, num_workers=1)))
    assert batch["input_ids"].is_pinned()


def test_source_running_out_and_epochs(packed_root, tmp_path):
    total_web = json.loads(_manifest(tmp_path, packed_root, TWO_PHASES).read_text())["sources"]["web"]["sequences"]
    with pytest.raises(ManifestError, match=r"phase 'p2': source 'web' runs out.*tokens are missing"):
        _manifest(tmp_path, packed_root, [
            {"name": "p1", "tokens": (total_web - 10) * SEQ_LEN, "weights": {"web": 1.0}},
            {"name": "p2", "tokens": 20 * SEQ_LEN, "weights": {"web": 1.0}}])
    code = json.loads(_manifest(tmp_path, packed_root, TWO_PHASES).read_text())["sources"]["code"]["sequences"]
    manifest = _manifest(tmp_path, packed_root, [{"name": "rep", "tokens": 2 * code * SEQ_LEN, "weights": {"code": 1.0}}])
    runs = json.loads(manifest.read_text())["phases"][0]["allocation"]["code"]
    assert [r["epoch"] for r in runs] == [0, 1]  # max_epochs 3 allows a second pass, in a new order
    seen = _read_all(manifest, "rep", 1, 1, 8)
    assert len(seen) == 2 * code and len({(s, r) for s, _, r, _ in seen}) == code


def test_bad_manifests(packed_root, tmp_path):
    with pytest.raises(ManifestError, match="sum to 0.9"):
        _manifest(tmp_path, packed_root, [{"name": "p", "tokens": 1000, "weights": {"web": 0.5, "wiki": 0.4}}])
    with pytest.raises(ManifestError, match=r"source\(s\) \['books'\] that do not exist"):
        _manifest(tmp_path, packed_root, [{"name": "p", "tokens": 1000, "weights": {"web": 0.5, "books": 0.5}}])
    with pytest.raises(ManifestError, match="leaves the manifest root"):
        _manifest(tmp_path, packed_root, TWO_PHASES, sources={"web": {"path": "../../etc"}})
    good = _manifest(tmp_path, packed_root, TWO_PHASES)
    data = json.loads(good.read_text())
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({**data, "schema_version": 99}))
    with pytest.raises(ManifestError, match="newer than this curation reads"):
        load_manifest(newer)
    escape = tmp_path / "escape.json"
    data2 = json.loads(good.read_text())
    data2["sources"]["web"]["shards"][0]["path"] = "../../../etc/passwd"
    escape.write_text(json.dumps(data2))
    with pytest.raises(ManifestError, match="leaves the manifest root"):
        load_manifest(escape)
    with pytest.raises(ManifestError, match="no phase 'p9'"):
        PhaseDataset(good, "p9")


def test_validate_and_tampered_shard(packed_root, tmp_path, capsys):
    root = tmp_path / "packed"
    shutil.copytree(packed_root, root)
    manifest = tmp_path / "m.json"
    assert cli_main(["manifest", "build", str(_phases(tmp_path, root, TWO_PHASES)), "--out", str(manifest)]) == 0
    out = capsys.readouterr().out
    assert "p1" in out and "web" in out and "left" in out
    assert cli_main(["manifest", "show", str(manifest)]) == 0
    assert cli_main(["manifest", "validate", str(manifest)]) == 0
    assert validate(manifest) == []
    raw = bytearray((root / "web" / "part0.bin").read_bytes())
    raw[10] ^= 1
    (root / "web" / "part0.bin").write_bytes(bytes(raw))
    assert cli_main(["manifest", "validate", str(manifest)]) == 1
    assert "sha256 does not match" in capsys.readouterr().out
    with pytest.raises(ShardError, match="sha256"):
        list(PhaseLoader(manifest, "p1", verify=True))
    # a shard swapped for another (its own metadata consistent) is refused without reading it all
    for suffix in (".bin", ".index.parquet", ".json"):
        shutil.copy(root / "web" / f"part1{suffix}", root / "web" / f"part0{suffix}")
    with pytest.raises(ShardError, match="differs from the manifest"):
        list(PhaseLoader(manifest, "p1"))


def _paths(value, prefix=()):
    """Every (path, value) inside a JSON value."""
    yield prefix, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, prefix + (index,))


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                           max_leaves=5)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzzed_manifests_give_a_clear_error_or_a_correct_loader(packed_root, tmp_path, data):
    """Any value of a valid manifest replaced (or removed): ManifestError / ShardError, or a loader that
    still reads only sequences that exist. Never another exception, never a crash."""
    good = _manifest(tmp_path, packed_root, TWO_PHASES)
    manifest = json.loads(good.read_text())
    paths = [p for p, _ in _paths(manifest) if p]
    target = data.draw(st.sampled_from(paths))
    parent = manifest
    for key in target[:-1]:
        parent = parent[key]
    if data.draw(st.booleans()) and isinstance(parent, dict):
        del parent[target[-1]]
    else:
        parent[target[-1]] = data.draw(JSON_VALUES)
    fuzzed = tmp_path / "fuzzed.json"
    fuzzed.write_text(json.dumps(manifest))
    try:
        loader = PhaseLoader(fuzzed, "p1", batch_size=16)
        for batch in loader:
            assert batch["input_ids"].shape[1] == SEQ_LEN
    except (ManifestError, ShardError):
        pass


def test_manifest_records_round_trip_byte_identical(packed_root, tmp_path):
    """A built manifest read into its records and written back is the same file, byte for byte."""
    from curation import storage
    from curation.manifest import Manifest

    good = _manifest(tmp_path, packed_root, TWO_PHASES)
    manifest, _ = load_manifest(good)
    assert manifest.phase("p2").allocation["code"][0].count > 0 and manifest.sources["web"].max_epochs == 1
    again = tmp_path / "again.json"
    storage.write_json(again, manifest.to_json())
    assert again.read_bytes() == good.read_bytes()
    assert Manifest.from_json(json.loads(good.read_text()), good) == manifest


@pytest.mark.parametrize("change, message", [
    (lambda m: m.pop("seq_len"), r"m.json: `seq_len` is missing"),
    (lambda m: m.update(phases={}), r"m.json: `phases` must be a list, got \{\}"),
    (lambda m: m["sources"]["web"]["shards"][1].update(sequences="12"), r"source 'web': shard 1: `sequences` must be a non-negative integer, got '12'"),
    (lambda m: m["sources"]["wiki"].pop("max_epochs"), r"source 'wiki': `max_epochs` is missing"),
    (lambda m: m["phases"][1]["allocation"]["web"][0].update(start=-1), r"phase 'p2': source 'web': run: `start` must be a non-negative integer, got -1"),
    (lambda m: m["phases"][0].update(sequences=7), r"phase 'p1': its runs do not add up to its 7 sequences"),
    (lambda m: m["phases"][0]["allocation"].update(books=[]), r"phase 'p1' reads source 'books', which the manifest lacks"),
    (lambda m: m["phases"].append("p3"), r"phase 2 must be a phase \(a JSON object\), got str"),
])
def test_a_manifest_of_the_wrong_shape_names_the_field(packed_root, tmp_path, change, message):
    data = json.loads(_manifest(tmp_path, packed_root, TWO_PHASES).read_text())
    change(data)
    bad = tmp_path / "m.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=message):
        load_manifest(bad)
    assert cli_main(["manifest", "show", str(bad)]) == 1  # refused with the message, no traceback
