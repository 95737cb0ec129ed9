"""Object storage through curation.storage, against a real S3-compatible HTTP server (moto's, started
here on 127.0.0.1 with its own bucket): globbing, whole-or-nothing publishing, runs with input and
output in the bucket on both executors (same bytes as on local disk), resumption, worker kills, and
errors that name the location."""

from __future__ import annotations

import glob as std_glob
import hashlib
import logging
import os
import random
import signal
import socket
import threading
import time

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from conftest import read_jsonl, write_jsonl, write_parquet
from curation import storage
from curation.config import InputConfig, pipeline_from_dict
from curation.executor import PipelineError, RunOptions, run_pipeline
from curation.io import AtomicParquetWriter, InputError, list_shards

BATCH_STAGES = [{"name": "lid"}, {"name": "gopher_quality"}, {"name": "c4"}, {"name": "fineweb"}, {"name": "pii"}]
STORE_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                   "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_SESSION_TOKEN", "AWS_PROFILE")


@pytest.fixture(scope="module")
def s3_server():
    """A real S3 endpoint on 127.0.0.1 (moto's server: HTTP, signatures, multipart uploads), with the
    store's usual environment pointing at it for the module, restored afterwards."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    saved = {k: os.environ.get(k) for k in STORE_VARIABLES}
    for key in STORE_VARIABLES:
        os.environ.pop(key, None)
    os.environ.update(AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_ACCESS_KEY_ID="test-key-id",
                      AWS_SECRET_ACCESS_KEY="test-secret-never-printed", AWS_DEFAULT_REGION="us-east-1")
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture()
def bucket(s3_server, request):
    """A fresh bucket per test, named after it."""
    name = "t-" + hashlib.sha256(request.node.name.encode()).hexdigest()[:20]
    admin = pafs.S3FileSystem(endpoint_override=s3_server, scheme="http", allow_bucket_creation=True)
    admin.create_dir(name)
    return f"s3://{name}"


def keys_in(uri: str) -> list[str]:
    """Every key under a prefix, as a plain client lists them."""
    return [e.relative for e in storage.list_files(uri)]


def upload_folder(folder, uri: str) -> None:
    for path in sorted(folder.iterdir()):
        storage.write_bytes(storage.join(uri, path.name), path.read_bytes())


def digest_uri(folder: str) -> dict[str, str]:
    return {e.relative: hashlib.sha256(storage.read_bytes(e.location)).hexdigest()
            for e in storage.list_files(folder) if e.relative.endswith(".parquet")}


def digest_local(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


def run(input_path: str, out: str, kind: str, stages=BATCH_STAGES, **options):
    raw = {"input": {"path": [input_path]}, "output": {"path": out}, "executor": {"kind": kind, "max_retries": 100},
           "stages": stages}
    return run_pipeline(pipeline_from_dict(raw), RunOptions(progress=False, **options))


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Six input shards of real text in JSONL, gzip JSONL and Parquet."""
    folder = tmp_path_factory.mktemp("input")
    write_jsonl(folder / "a_gum.jsonl", read_jsonl("en_gum_docs.jsonl.gz", 60))
    write_jsonl(folder / "b_msra.jsonl.gz", read_jsonl("zh_msra_news.jsonl.gz", 300), compress=True)
    write_parquet(folder / "c_reviews.parquet", read_jsonl("zh_reviews.jsonl.gz", 800))
    write_jsonl(folder / "d_code.jsonl", read_jsonl("code_humanevalx_linux.jsonl.gz", 100))
    write_parquet(folder / "e_wiki.parquet", read_jsonl("en_wikitext2_valid_test.jsonl.gz", 40))
    write_jsonl(folder / "f_web.jsonl.gz", [r for r in read_jsonl("web_commoncrawl_samples.jsonl.gz", 300) if r["text"]],
                compress=True)
    return folder


# --- the layer itself -------------------------------------------------------------------------------


def test_glob_on_the_store_matches_glob_on_disk(bucket, tmp_path):
    """The store's glob (one listing of the prefix) selects what glob.glob selects on the same tree."""
    names = ["a.jsonl", "b.jsonl.gz", "c.parquet", "sub/d.jsonl", "sub/deeper/e.jsonl", ".hidden.jsonl", "ab.txt"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(name.encode())
        storage.write_bytes(f"{bucket}/tree/{name}", name.encode())
    for pattern in ["*.jsonl", "*.jsonl*", "*", "sub/*.jsonl", "**/*.jsonl", "a?.txt", "[ab].*", "sub/**"]:
        on_disk = sorted(os.path.relpath(p, tmp_path) for p in std_glob.glob(str(tmp_path / pattern), recursive=True)
                         if os.path.isfile(p))
        on_store = sorted(e.location[len(f"{bucket}/tree/"):] for e in storage.glob(f"{bucket}/tree/{pattern}"))
        assert on_store == on_disk, pattern
    sizes = {e.relative: e.size for e in storage.list_files(f"{bucket}/tree")}
    assert sizes["sub/deeper/e.jsonl"] == len(b"sub/deeper/e.jsonl")
    # A folder given as input means its data files, as on disk (not hidden ones, not other files)
    shards = list_shards(InputConfig(path=(f"{bucket}/tree",)))
    assert [(s.name, s.format, s.size) for s in shards] == [("a", "jsonl", 7), ("b", "jsonl", 10), ("c", "parquet", 9)]
    assert [s.name for s in list_shards(InputConfig(path=(str(tmp_path),)))] == ["a", "b", "c"]


def test_a_write_is_invisible_until_commit_and_abort_leaves_no_key(bucket):
    target = f"{bucket}/out/kept/part-00000.parquet"
    writer = AtomicParquetWriter(target)
    writer.write(pa.record_batch({"a": list(range(1000))}))
    assert keys_in(f"{bucket}/out") == []  # nothing in the bucket while it is written
    writer.abort()
    assert keys_in(f"{bucket}/out") == [] and not writer.tmp_path.exists()
    writer = AtomicParquetWriter(target)
    writer.write(pa.record_batch({"a": list(range(1000))}))
    writer.commit()
    assert keys_in(f"{bucket}/out") == ["kept/part-00000.parquet"] and not writer.tmp_path.exists()
    assert pq.read_table(storage.open_input(target)).column("a").to_pylist() == list(range(1000))

    def fails(handle):
        handle.write(b"half of it")
        raise RuntimeError("the writer failed midway")

    with pytest.raises(RuntimeError, match="midway"):
        storage.publish(f"{bucket}/out/stats.json", fails)
    assert keys_in(f"{bucket}/out") == ["kept/part-00000.parquet"]


def test_a_large_object_goes_up_as_a_multipart_upload_whole(bucket):
    """Over pyarrow's part size the upload is multipart: the object is still the whole file."""
    data = os.urandom(23 * 1024 * 1024)
    storage.write_bytes(f"{bucket}/big.bin", data)
    assert storage.size(f"{bucket}/big.bin") == len(data)
    assert hashlib.sha256(storage.read_bytes(f"{bucket}/big.bin")).digest() == hashlib.sha256(data).digest()


def test_errors_name_the_location_and_endpoint_never_the_secret(bucket, monkeypatch):
    with pytest.raises(InputError, match=r"input file not found: s3://.*/nothing.jsonl"):
        list_shards(InputConfig(path=(f"{bucket}/nothing.jsonl",)))
    with pytest.raises(storage.StorageError, match=r"s3://no-such-bucket-here/x.json: cannot .*bucket") as missing:
        storage.write_json("s3://no-such-bucket-here/x.json", {"a": 1})
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed}")
    # one request, not the SDK's five with backoff (4-12 s at a closed port): the message is the same
    monkeypatch.setattr(storage, "S3_ATTEMPTS", 1)
    with pytest.raises(storage.StorageError, match=rf"{bucket}/in: cannot list it \(endpoint http://127.0.0.1:{closed}\)"
                       r".*reachable") as unreachable:
        list_shards(InputConfig(path=(f"{bucket}/in/*.jsonl",)))
    for error in (missing, unreachable):
        assert "test-secret-never-printed" not in str(error.value)


# --- runs -------------------------------------------------------------------------------------------


def test_run_from_and_to_s3_equals_local_disk_on_both_executors_and_resumes(bucket, shards, tmp_path, ray_instance):
    upload_folder(shards, f"{bucket}/in")
    local = run(str(shards / "*"), str(tmp_path / "local"), "local")
    on_store = run(f"{bucket}/in/*", f"{bucket}/out-local", "local")
    on_ray = run(f"{bucket}/in/*", f"{bucket}/out-ray", "ray")
    assert local["output"]["kept_docs"] > 0 and local["output"]["rejected_docs"] > 0
    for part in ("kept", "rejected"):
        expected = digest_local(tmp_path / "local" / part)
        assert len(expected) == 6
        assert digest_uri(f"{bucket}/out-local/{part}") == expected
        assert digest_uri(f"{bucket}/out-ray/{part}") == expected
    assert on_store["output"] == local["output"] == on_ray["output"]
    assert on_ray["one_schema"]["kept_rewritten"] > 0  # the union-schema rewrite ran in the bucket
    assert on_store["input"]["docs"] == local["input"]["docs"]
    # A plain reader listing the output sees the shards and nothing half-written or temporary.
    keys = keys_in(f"{bucket}/out-ray")
    assert not [k for k in keys if ".tmp-" in k or "/." in k or k.startswith(".")]
    assert sorted(k for k in keys if k.startswith("kept/")) == [f"kept/part-{i:05d}.parquet" for i in range(6)]
    assert {"stats.json", "shards.json", "_state/pipeline.json", "_state/one_schema.json"} <= set(keys)
    assert len([k for k in keys if k.startswith("_state/final/")]) == 6
    index = storage.read_json(f"{bucket}/out-ray/shards.json")
    assert [entry["input"] for entry in index] == sorted(e.location for e in storage.glob(f"{bucket}/in/*"))
    # pyarrow reads the folder as one table straight from the bucket
    filesystem, path = storage.resolve(f"{bucket}/out-ray/kept")
    assert pq.read_table(path, filesystem=filesystem).num_rows == local["output"]["kept_docs"]

    # A rerun finds every marker and writes nothing again.
    before = {e.relative: storage.info(e.location).mtime for e in storage.list_files(f"{bucket}/out-ray/kept")}
    again = run(f"{bucket}/in/*", f"{bucket}/out-ray", "ray")
    assert again["shards"]["skipped_done"] == 6 and again["output"] == on_ray["output"]
    assert {e.relative: storage.info(e.location).mtime for e in storage.list_files(f"{bucket}/out-ray/kept")} == before
    # A lost marker: that shard alone runs again and writes the same bytes to the same key.
    storage.delete(f"{bucket}/out-ray/_state/final/c_reviews.json")
    storage.delete(f"{bucket}/out-ray/stats.json")
    third = run(f"{bucket}/in/*", f"{bucket}/out-ray", "local")
    assert third["output"] == on_ray["output"]
    assert digest_uri(f"{bucket}/out-ray/kept") == digest_local(tmp_path / "local" / "kept")


def test_output_folder_rules_hold_on_a_bucket(bucket, shards):
    upload_folder(shards, f"{bucket}/in")
    out = f"{bucket}/out"
    storage.write_bytes(f"{out}/notes.txt", b"a user's file")
    with pytest.raises(PipelineError, match=r"already holds files that curation did not write \(notes.txt\)"):
        run(f"{bucket}/in/a_gum.jsonl", out, "local")
    storage.delete(f"{out}/notes.txt")
    run(f"{bucket}/in/a_gum.jsonl", out, "local")
    with pytest.raises(PipelineError, match="different pipeline.*--overwrite"):
        run(f"{bucket}/in/a_gum.jsonl", out, "local", stages=[{"name": "noop"}])
    storage.write_bytes(f"{out}/kept/notes.txt", b"a user's file")
    with pytest.raises(PipelineError, match=r"--overwrite would have to remove .*kept/notes.txt"):
        run(f"{bucket}/in/a_gum.jsonl", out, "local", stages=[{"name": "noop"}], overwrite=True)
    storage.delete(f"{out}/kept/notes.txt")
    stats = run(f"{bucket}/in/a_gum.jsonl", out, "local", stages=[{"name": "noop"}], overwrite=True)
    assert stats["output"]["rejected_docs"] == 0
    with pytest.raises(PipelineError, match="contains the input"):
        run(f"{bucket}/in/*", f"{bucket}", "local")
    assert keys_in(f"{bucket}/in") == sorted(p.name for p in shards.iterdir())  # inputs untouched


class BoundedKiller(threading.Thread):
    """SIGKILLs a stage worker of ours (a descendant of this test process: test_faults.ray_worker_pids)
    every 0.3-0.8 s once shards finish (at 1-2 s the faster run of 2026-11-30 ended after 2 kills, neither
    mid-shard), `limit` times: bounded, so that on a busy 2-core machine, where an actor takes seconds
    to start, the run still makes progress between kills."""

    def __init__(self, seed: int, limit: int, markers: str) -> None:
        super().__init__(daemon=True)
        self.rng, self.limit, self.kills, self.running = random.Random(seed), limit, 0, True
        self.markers = markers

    def run(self) -> None:
        from test_faults import ray_worker_pids

        # From the first finished shard on, the actors are set up and mid-shard: a kill then loses
        # work in flight (an upload, a spool file), not an actor still loading its models.
        while self.running and not storage.names_in(self.markers):
            time.sleep(0.2)
        while self.running and self.kills < self.limit:
            time.sleep(self.rng.uniform(0.3, 0.8))
            pids = ray_worker_pids()
            if pids and self.running:
                try:
                    os.kill(self.rng.choice(pids), signal.SIGKILL)
                    self.kills += 1
                except ProcessLookupError:
                    continue


def test_worker_kills_on_ray_with_the_output_in_a_bucket_change_nothing(bucket, tmp_path, ray_instance):
    rows = [{"id": r["id"], "text": r["text"]} for name in ("en_ud_ewt_web_docs.jsonl.gz", "zh_reviews.jsonl.gz",
                                                             "web_commoncrawl_samples.jsonl.gz")
            for r in read_jsonl(name, 3000) if r["text"]]
    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(12):
        pq.write_table(pa.Table.from_pylist(rows[k::12]), folder / f"part{k:02d}.parquet")
    upload_folder(folder, f"{bucket}/in")
    clean = run(str(folder / "*.parquet"), str(tmp_path / "clean"), "local")

    killer = BoundedKiller(seed=7, limit=4, markers=f"{bucket}/faulted/_state/final")
    killer.start()
    try:
        faulted = run(f"{bucket}/in/*.parquet", f"{bucket}/faulted", "ray")
    finally:
        killer.running = False
        killer.join()
    print(f"\nkills: {killer.kills}; shard retries: {faulted['executor']['worker_retries']}")
    assert killer.kills >= 1 and faulted["executor"]["worker_retries"] >= 1
    for part in ("kept", "rejected"):
        assert digest_uri(f"{bucket}/faulted/{part}") == digest_local(tmp_path / "clean" / part)
    assert faulted["output"] == clean["output"] and faulted["input"] == clean["input"]
    assert not [k for k in keys_in(f"{bucket}/faulted") if ".tmp-" in k]


def test_spool_folders_of_dead_processes_are_swept(tmp_path, monkeypatch):
    """A worker killed mid-shard leaves its spool file; the next writer on the machine removes it, and
    never a live process's."""
    import subprocess

    monkeypatch.setenv("CURATION_SPOOL_DIR", str(tmp_path))
    dead = subprocess.Popen(["true"])
    dead.wait()  # reaped: its pid names no process now
    for pid in (dead.pid, os.getppid()):
        (tmp_path / f"curation-spool-{pid}").mkdir()
        (tmp_path / f"curation-spool-{pid}" / ".part-00000.parquet.tmp-0123456789ab").write_bytes(b"x")
    assert storage.sweep_spool() == [str(tmp_path / f"curation-spool-{dead.pid}")]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"curation-spool-{os.getppid()}"]


def test_packed_shards_and_pack_json_in_a_bucket_equal_local_disk(bucket, shards, tmp_path, ray_instance):
    """pack, the global stage ending the pipeline, writes its token shards and pack.json in the bucket
    (through the same publishing), from keys files that live there too: the same bytes as on disk."""
    from curation.tokenizer.train import train_tokenizer

    tokenizer = train_tokenizer([r["text"] for r in read_jsonl("en_gum_docs.jsonl.gz", 150)], tmp_path / "tok",
                                vocab_size=1500)
    upload_folder(shards, f"{bucket}/in")
    stages = [{"name": "length_filter", "min_chars": 200}, {"name": "pack", "tokenizer": str(tokenizer), "seq_len": 256}]
    local = run(str(shards / "*"), str(tmp_path / "local"), "local", stages=stages)
    on_ray = run(f"{bucket}/in/*", f"{bucket}/out", "ray", stages=stages)
    assert on_ray["output"] == local["output"]
    on_disk = {str(p.relative_to(tmp_path / "local" / "default")): p.read_bytes()
               for p in sorted((tmp_path / "local" / "default").iterdir())}
    assert len(on_disk) >= 3 * 6  # .bin, .index.parquet, .json per input shard (and the tail)
    in_bucket = {e.relative: storage.read_bytes(e.location) for e in storage.list_files(f"{bucket}/out/default")}
    assert in_bucket == on_disk
    summary = storage.read_json(f"{bucket}/out/pack.json")
    expected = storage.read_json(tmp_path / "local" / "pack.json")
    summary.pop("tokenizer"), expected.pop("tokenizer")
    assert summary == expected and summary["sources"]["default"]["sequences"] > 0
    assert not [k for k in keys_in(f"{bucket}/out") if ".tmp-" in k]

    # The manifest built from a phases file in the bucket, and a phase read straight from s3: the same
    # batches, in the same order, as from the local copy.
    import torch
    import yaml

    from curation.loader import PhaseLoader
    from curation.manifest import build_manifest, validate

    # 200 of the 6,626 sequences, drawn from all the shards: each is a ranged read from the bucket
    # (half of them, 3,313, took 24 s from moto)
    tokens = 200 * 256
    assert summary["sources"]["default"]["sequences"] > 1000
    phases = {"root": ".", "seed": 0, "sources": {"default": {}},
              "phases": [{"name": "p1", "tokens": tokens, "seed": 1, "weights": {"default": 1.0}}]}
    (tmp_path / "local" / "phases.yaml").write_text(yaml.safe_dump(phases))
    storage.write_bytes(f"{bucket}/out/phases.yaml", yaml.safe_dump(phases).encode())
    local_manifest = build_manifest(tmp_path / "local" / "phases.yaml", tmp_path / "local" / "manifest.json")
    remote_manifest = build_manifest(f"{bucket}/out/phases.yaml", f"{bucket}/out/manifest.json")
    assert remote_manifest == local_manifest and remote_manifest["root"] == "."
    assert validate(f"{bucket}/out/manifest.json") == []
    local_batches = list(PhaseLoader(tmp_path / "local" / "manifest.json", "p1", batch_size=4))
    remote_batches = list(PhaseLoader(f"{bucket}/out/manifest.json", "p1", batch_size=4))
    assert len(remote_batches) == len(local_batches) > 1
    for mine, theirs in zip(remote_batches, local_batches):
        assert torch.equal(mine["input_ids"], theirs["input_ids"])
    # A shard changed in the bucket after the manifest was built is refused there too.
    bin_key = f"{bucket}/out/default/{summary['sources']['default']['shards'][0]['name']}.bin"
    data = bytearray(storage.read_bytes(bin_key))
    data[0] ^= 1
    storage.write_bytes(bin_key, bytes(data))
    assert any("sha256 does not match" in problem for problem in validate(f"{bucket}/out/manifest.json"))


def test_an_upload_that_fails_transiently_is_retried_and_a_refused_one_is_not(bucket, monkeypatch):
    """The upload of a finished file is idempotent (same bytes, same key): a dropped connection is
    retried with backoff; an error that retrying cannot fix (access denied) is reported at once."""
    real_resolve = storage.resolve
    failures = {"left": 2, "message": "AWS Error NETWORK_CONNECTION during UploadPart operation: connection reset"}
    calls = []

    class Flaky:
        def __init__(self, filesystem):
            self.filesystem = filesystem

        def open_output_stream(self, path, **options):
            calls.append(path)
            if failures["left"]:
                failures["left"] -= 1
                raise OSError(failures["message"])
            return self.filesystem.open_output_stream(path, **options)

    def flaky_resolve(location):
        filesystem, path = real_resolve(location)
        return (Flaky(filesystem) if storage.is_uri(location) else filesystem), path

    monkeypatch.setattr(storage, "resolve", flaky_resolve)
    monkeypatch.setattr(storage.time, "sleep", lambda seconds: None)  # the backoff, without the wait
    storage.write_json(f"{bucket}/retried.json", {"a": 1})
    assert len(calls) == 3
    monkeypatch.setattr(storage, "resolve", real_resolve)
    assert storage.read_json(f"{bucket}/retried.json") == {"a": 1}

    monkeypatch.setattr(storage, "resolve", flaky_resolve)
    failures.update(left=5, message="AWS Error ACCESS_DENIED during PutObject operation: Access Denied")
    calls.clear()
    with pytest.raises(storage.StorageError, match=r"refused.json: cannot upload it .*credentials"):
        storage.write_json(f"{bucket}/refused.json", {"a": 1})
    assert len(calls) == 1


def test_exact_dedup_spills_shuffles_and_decides_in_the_bucket(bucket, shards, tmp_path, ray_instance):
    """A global stage with the run in a bucket: keys spilled by the workers, the shuffle's partitions,
    the decisions, the next pass's intermediates and the aggregate marker all live under
    s3://.../_work and _state; the result equals a local-disk run, and _work is gone after it."""
    import shutil

    folder = tmp_path / "in"
    shutil.copytree(shards, folder)
    # the same documents again under another name: exact duplicates across shards
    shutil.copy(folder / "a_gum.jsonl", folder / "g_gum_copy.jsonl")
    upload_folder(folder, f"{bucket}/in")
    stages = [{"name": "exact_dedup", "partitions": 4}, {"name": "length_filter", "min_chars": 50}]
    local = run(str(folder / "*"), str(tmp_path / "local"), "local", stages=stages)
    on_ray = run(f"{bucket}/in/*", f"{bucket}/out", "ray", stages=stages)
    assert local["stages"][0]["dropped"].get("exact_duplicate", 0) >= 60
    assert on_ray["output"] == local["output"] and on_ray["stages"][0]["dropped"] == local["stages"][0]["dropped"]
    for part in ("kept", "rejected"):
        assert digest_uri(f"{bucket}/out/{part}") == digest_local(tmp_path / "local" / part)
    keys = keys_in(f"{bucket}/out")
    assert not [k for k in keys if k.startswith("_work/") or ".tmp-" in k]
    assert [k for k in keys if k.endswith(".aggregate.json")] == ["_state/00_exact_dedup.aggregate.json"]
    again = run(f"{bucket}/in/*", f"{bucket}/out", "local", stages=stages)
    assert again["shards"]["skipped_done"] == 7 and again["output"] == local["output"]


# --- the dedup chain and its indexes in a bucket ----------------------------------------------------

DEDUP_CHAIN = ("exact_dedup", "paragraph_dedup", "minhash_dedup")


def dedup_chain(index_write: str | None = None, index_read: str | None = None) -> list[dict]:
    """The demo's dedup stages with small partitions, each writing or reading its own index folder."""
    return [{"name": name, "partitions": 2,
             **({"index_write": storage.join(index_write, name)} if index_write else {}),
             **({"index_read": [storage.join(index_read, name)]} if index_read else {})} for name in DEDUP_CHAIN]


def planted_copies(lo: int) -> list[dict]:
    """Real documents with planted copies of other shards' ones: near copies of GUM documents (1% of the
    words replaced, one line: no paragraph of them is an exact copy), exact copies of MSRA news (other
    white space), and documents made of GUM paragraphs under a line of their own."""
    from test_dedup import perturb

    rng = random.Random(5 + lo)
    gum, msra = read_jsonl("en_gum_docs.jsonl.gz", 60), read_jsonl("zh_msra_news.jsonl.gz", 300)
    rows = [{"id": f"near{i}", "text": perturb(gum[i]["text"], 0.01, rng), "lang": "en"} for i in range(lo, lo + 20)]
    rows += [{"id": f"exact{i}", "text": " " + msra[i]["text"] + "\n", "lang": "zh"} for i in range(lo, lo + 20)]
    lines = [line for doc in gum[40 + lo // 2:50 + lo // 2] for line in doc["text"].split("\n") if len(line) > 120]
    rows += [{"id": f"mix{lo}-{i}", "text": "\n".join([f"Collected notes, part {lo + i}, kept here for later reading"]
                                                       + lines[3 * i:3 * i + 3]), "lang": "en"}
             for i in range(len(lines) // 3)]
    return rows


@pytest.fixture()
def dedup_halves(shards, tmp_path):
    """A corpus in two halves (1,700 documents): the `shards` fixture's first three files and planted
    copies of them, then its last three and more copies of first-half documents."""
    import shutil

    halves = (tmp_path / "in1", tmp_path / "in2")
    for folder, names, lo in zip(halves, (("a_gum.jsonl", "b_msra.jsonl.gz", "c_reviews.parquet"),
                                          ("d_code.jsonl", "e_wiki.parquet", "f_web.jsonl.gz")), (0, 20)):
        folder.mkdir()
        for name in names:
            shutil.copy(shards / name, folder / name)
        write_parquet(folder / "g_planted.parquet", planted_copies(lo))
    return halves


def index_digests(folder: str) -> dict[str, str]:
    """The parts of an index and its manifest without `written_by` (it names the run's work folder)."""
    found = {e.relative: hashlib.sha256(storage.read_bytes(e.location)).hexdigest() for e in storage.list_files(folder)
             if e.relative != "index.json"}
    manifest = storage.read_json(storage.join(folder, "index.json"))
    manifest.pop("written_by")
    return {**found, "index.json": manifest}


def test_dedup_chain_and_its_indexes_in_a_bucket_equal_local_disk(bucket, dedup_halves, tmp_path, ray_instance):
    """exact_dedup -> paragraph_dedup -> minhash_dedup from s3 to s3 on Ray: every spill, shuffle, join,
    component round and step marker under s3://.../_work, indexes written to the bucket. The outputs and
    the indexes equal a local-disk run's, a rerun does nothing again, and a second run deduplicating
    against the indexes in the bucket decides as the same run against the local indexes (on the local
    executor: a Ray run of the chain takes 40 s on a loaded 2-core machine, the local one 15 s)."""
    first, second = dedup_halves
    upload_folder(first, f"{bucket}/in1")
    upload_folder(second, f"{bucket}/in2")
    local1 = run(str(first / "*"), str(tmp_path / "local1"), "local", stages=dedup_chain(index_write=str(tmp_path / "idx")))
    local2 = run(str(second / "*"), str(tmp_path / "local2"), "local", stages=dedup_chain(index_read=str(tmp_path / "idx")))
    on_ray1 = run(f"{bucket}/in1/*", f"{bucket}/out1", "ray", stages=dedup_chain(index_write=f"{bucket}/idx"))
    aggregates = local1["aggregates"]
    assert aggregates["00_exact_dedup"]["duplicates"] > 0 and aggregates["01_paragraph_dedup"]["duplicate_paragraphs"] > 0
    assert aggregates["02_minhash_dedup"]["duplicates"] > 0
    assert on_ray1["aggregates"] == aggregates and on_ray1["output"] == local1["output"]
    for part in ("kept", "rejected"):
        assert digest_uri(f"{bucket}/out1/{part}") == digest_local(tmp_path / "local1" / part)
    for name in DEDUP_CHAIN:
        assert index_digests(f"{bucket}/idx/{name}") == index_digests(str(tmp_path / "idx" / name))
    keys = keys_in(f"{bucket}/out1")
    assert not [k for k in keys if k.startswith("_work/") or ".tmp-" in k]
    assert sorted(k for k in keys if k.endswith(".aggregate.json")) == [
        f"_state/{k:02d}_{name}.aggregate.json" for k, name in enumerate(DEDUP_CHAIN)]

    # A rerun finds every marker and the published indexes: nothing is written again.
    stamps = {e.relative: storage.info(e.location).mtime for folder in ("out1/kept", "idx")
              for e in storage.list_files(f"{bucket}/{folder}")}
    again = run(f"{bucket}/in1/*", f"{bucket}/out1", "ray", stages=dedup_chain(index_write=f"{bucket}/idx"))
    assert again["shards"]["skipped_done"] == 4 and again["output"] == local1["output"]
    assert {e.relative: storage.info(e.location).mtime for folder in ("out1/kept", "idx")
            for e in storage.list_files(f"{bucket}/{folder}")} == stamps

    # The second half against the indexes in the bucket: the same decisions as against the local ones,
    # among them copies whose original is only in the first half.
    on_store2 = run(f"{bucket}/in2/*", f"{bucket}/out2", "local", stages=dedup_chain(index_read=f"{bucket}/idx"))
    assert on_store2["output"] == local2["output"] and on_store2["aggregates"] == local2["aggregates"]
    for part in ("kept", "rejected"):
        assert digest_uri(f"{bucket}/out2/{part}") == digest_local(tmp_path / "local2" / part)
    first_ids = {i for p in first.iterdir() for i in read_ids(p)}
    rejected = pa.concat_tables([pq.read_table(p) for p in sorted((tmp_path / "local2" / "rejected").glob("*.parquet"))],
                                promote_options="default")
    crossing = {reason for reason, of in zip(rejected.column("drop_reason").to_pylist(),
                                             rejected.column("duplicate_of").to_pylist()) if of in first_ids}
    assert crossing == {"exact_duplicate", "near_duplicate"}
    assert local2["aggregates"]["01_paragraph_dedup"]["duplicate_paragraphs"] > 0


def read_ids(path) -> list[str]:
    if path.suffix == ".parquet":
        return pq.read_table(path, columns=["id"]).column("id").to_pylist()
    return [row["id"] for row in read_jsonl_file(path)]


def read_jsonl_file(path) -> list[dict]:
    import gzip
    import json

    with (gzip.open(path, "rt") if path.suffix == ".gz" else open(path)) as handle:
        return [json.loads(line) for line in handle]


def test_component_rounds_in_a_bucket_resume_at_the_first_unfinished_round(bucket):
    """components.py with its work folder in a bucket: a run killed after three rounds leaves their step
    markers; the rerun finds them with one listing, runs only the rounds after them, and finds the
    components of the driver-side reference. Each round's input is removed once the next has finished."""
    import numpy as np

    from curation.stages import components as cc
    from curation.stages import minhash_dedup as mh

    path = np.random.default_rng(9).permutation(300).astype(np.int64)
    src, dst = path[:-1], path[1:]
    work = f"{bucket}/work"
    cc.write_undirected(src, dst, f"{work}/input", "edges", 2)
    calls = []

    def dying_map(fn, items):
        if len(calls) == 3:
            raise RuntimeError("worker killed")
        calls.append(fn.__name__)
        return [fn(item) for item in items]

    with pytest.raises(RuntimeError, match="worker killed"):
        cc.connected_components(dying_map, cc.Steps(work), work, f"{work}/input", 2)
    markers = {e.relative: e.location for e in storage.list_files(f"{work}/steps")}
    assert len(markers) == 3
    stamps = {name: storage.info(location).mtime for name, location in markers.items()}
    resumed = []

    def counting_map(fn, items):
        resumed.append(fn.__name__)
        return [fn(item) for item in items]

    star, info = cc.connected_components(counting_map, cc.Steps(work), work, f"{work}/input", 2)
    leaf, root = cc.read_stars(star, 2)
    nodes, reference = mh.connected_components(src, dst)
    assert dict(zip(leaf.tolist(), root.tolist())) == {n: r for n, r in zip(nodes.tolist(), reference.tolist()) if n != r}
    assert len(resumed) == 2 * info["rounds"] - 1 - 3  # the three finished rounds are not run again
    assert {name: storage.info(location).mtime for name, location in markers.items()} == stamps
    assert {key.split("/")[0] for key in keys_in(work)} == {"input", "steps", storage.basename(star)}


def test_an_unfinished_index_in_a_bucket_is_refused_by_readers_and_finished_by_its_writer(bucket):
    """A store has no rename: an index's parts go straight to their keys and index.json, written last,
    makes the folder an index. Until then a reader refuses it; a resumed writer rewrites the parts and
    publishes, removing a surplus part of a killed attempt; a folder of someone else's files is refused."""
    from curation.stages import dedup_index

    index, settings = f"{bucket}/idx/exact", {"hash": "blake2b"}
    assert dedup_index.begin_write(index, "exact_dedup", "run-1") and dedup_index.staging_dir(index) == index
    for k in range(3):  # a killed attempt with more partitions left part 2
        storage.write_bytes(storage.join(index, dedup_index.part_name(k)), b"not yet")
    with pytest.raises(ValueError, match=r"idx/exact/index.json is missing: .* \(a run writing it did not finish"):
        dedup_index.read_manifest(index, "exact_dedup", settings)
    assert dedup_index.begin_write(index, "exact_dedup", "run-1")  # resumed: the parts are written again
    for k in range(2):
        writer = AtomicParquetWriter(storage.join(index, dedup_index.part_name(k)))
        writer.write(pa.table({"hash": list(range(10 * k, 10 * k + 5))}))
        writer.commit()
    manifest = dedup_index.publish(index, "exact_dedup", settings, "run-1", 2)
    assert manifest["rows"] == 10 and keys_in(index) == ["index.json", "part-00000.parquet", "part-00001.parquet"]
    assert dedup_index.read_manifest(index, "exact_dedup", settings) == manifest
    assert dedup_index.index_parts((index,), "exact_dedup", settings) == [f"{index}/part-00000.parquet",
                                                                           f"{index}/part-00001.parquet"]
    assert not dedup_index.begin_write(index, "exact_dedup", "run-1")  # published by this run: not again
    with pytest.raises(ValueError, match="already exists"):
        dedup_index.begin_write(index, "exact_dedup", "run-2")
    users = {"notes/part-00000.parquet.txt": b"a user's file", "nested/part-00000.parquet": b"parts?",
             "nested/sub/data.bin": b"not a part"}
    for key, data in users.items():
        storage.write_bytes(f"{bucket}/{key}", data)
    for folder in ("notes", "nested"):
        with pytest.raises(ValueError, match="already exists"):
            dedup_index.begin_write(f"{bucket}/{folder}", "exact_dedup", "run-1")
    assert {key: storage.read_bytes(f"{bucket}/{key}") for key in users} == users
