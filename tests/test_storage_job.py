"""The main job with its input and output in object storage (a real S3-compatible server, moto's, started
here on 127.0.0.1): every step after curation (tokenizer, its evaluation, pack, phases and manifest,
report) writes into the bucket the bytes the same job writes on local disk, a rerun writes nothing but
job.json and the report, and the loader reads a phase straight from the bucket with ranged reads: the
same batches as from disk, only the bytes of the sequences it serves."""

from __future__ import annotations

import hashlib
import json

import pyarrow.fs as pafs
import pytest
import torch

from conftest import read_jsonl, write_jsonl
from curation import storage
from curation.executor import RunOptions
from curation.job import load_job, run_job
from curation.loader import PhaseLoader
from test_storage import s3_server  # noqa: F401 (the fixture: one S3 server set-up for both files)

# a few hundred real documents in four sources, two languages and code
SOURCES = {"prose": ("en_gum_docs", 80), "news": ("zh_msra_news", 200), "code": ("code_humanevalx_linux", 60),
           "web": ("web_commoncrawl_samples", 150)}


@pytest.fixture(scope="module")
def bucket(s3_server):
    """A bucket on the real S3 endpoint of tests/test_storage.py's `s3_server` (moto on 127.0.0.1, the
    store's usual environment pointing at it for the module)."""
    admin = pafs.S3FileSystem(endpoint_override=s3_server, scheme="http", allow_bucket_creation=True)
    admin.create_dir("job")
    return "s3://job"


def job_yaml(folder, input_base: str, out: str) -> str:
    import yaml

    config = {
        "input": {"sources": {s: [storage.join(input_base, f"{name}.jsonl")] for s, (name, _) in SOURCES.items()},
                  "empty_text": "drop"},
        "output": {"path": out},
        "executor": {"kind": "local"},
        "stages": [{"name": "lid", "source_languages": {"code": "code"}},
                   {"name": "gopher_quality", "languages": ["en", "zh"]}],
        "tokenizer": {"vocab_size": 1000, "budget_mb": 1, "holdout_fraction": 0.05,
                      "shares": {"en": 0.5, "zh": 0.3, "other": 0.2}},
        "pack": {"seq_len": 64},
        "phases": {"sources": {s: {"max_epochs": 2} for s in SOURCES},
                   "phases": [{"name": "one", "tokens": 6_000, "seed": 1,
                               "weights": {"prose": 0.3, "news": 0.3, "code": 0.1, "web": 0.3}},
                              {"name": "two", "tokens": 4_000, "seed": 2,
                               "weights": {"prose": 0.1, "news": 0.5, "code": 0.2, "web": 0.2}}]},
        "report": True,
    }
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.fixture(scope="module")
def runs(bucket, tmp_path_factory):
    """The same job twice: input and output on local disk, and input and output in the bucket."""
    inputs = tmp_path_factory.mktemp("job_in")
    for name, count in SOURCES.values():
        write_jsonl(inputs / f"{name}.jsonl", read_jsonl(f"{name}.jsonl.gz", count))
        storage.write_bytes(f"{bucket}/in/{name}.jsonl", (inputs / f"{name}.jsonl").read_bytes())
    folder = tmp_path_factory.mktemp("job")
    local = folder / "out"
    run_job(load_job(job_yaml(_mkdir(folder / "local"), str(inputs), str(local))), RunOptions(progress=False))
    remote = f"{bucket}/out"
    remote_job = load_job(job_yaml(_mkdir(folder / "remote"), f"{bucket}/in", remote))
    record = run_job(remote_job, RunOptions(progress=False))
    return local, remote, remote_job, record


def _mkdir(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


def files(base) -> dict[str, bytes]:
    """Every file under OUT by its path relative to OUT, on disk or in the bucket."""
    return {e.relative: storage.read_bytes(e.location) for e in storage.list_files(base)}


# Files that name where the job ran (an absolute path or a URI) in one field: compared without it.
EMBEDS_A_LOCATION = {"packed/pack.json": "tokenizer", "tokenizer/eval.json": "tokenizer",
                     "tokenizer/tokenizer_meta.json": "inputs"}


def test_every_step_writes_into_the_bucket_the_bytes_it_writes_on_disk(runs):
    local, remote, _, record = runs
    on_disk, in_bucket = files(local), files(remote)
    assert {"curation", "tokenizer", "pack", "manifest", "tokenizer_eval", "report"} <= set(record["steps"])
    # the outputs (the runs' own records, _state/, stats.json and shards.json, hold timings and locations)
    compared = [name for name in on_disk if name.startswith(("kept/", "rejected/", "packed/", "tokenizer/"))
                and "_state/" not in name and storage.basename(name) not in ("stats.json", "shards.json")
                or name in ("manifest.json", "phases.yaml")]
    assert sum(name.endswith(".bin") for name in compared) >= 4 and "tokenizer/tokenizer.json" in compared
    for name in compared:
        assert name in in_bucket, name
        if name in EMBEDS_A_LOCATION:
            mine, theirs = json.loads(in_bucket[name]), json.loads(on_disk[name])
            field = EMBEDS_A_LOCATION[name]
            where = mine.pop(field)
            assert str(remote) in str(where) and str(local) in str(theirs[field])
            theirs.pop(field)
            assert mine == theirs, name
        else:
            assert in_bucket[name] == on_disk[name], name
    assert {"report.html", "job.json", "stats.json"} <= set(in_bucket)
    assert b"Tokenizer" in in_bucket["report.html"] and b"tokens per phase and source" in in_bucket["report.html"]
    # nothing half-written or left over in the bucket: no temporary keys, no counting spill
    assert not [k for k in in_bucket if ".tmp-" in k or "/.counts-" in k or k.startswith(".counts-")]
    # every file of the local run has its copy in the bucket (the bucket may hold the sinks' markers too)
    assert set(on_disk) - set(in_bucket) == set()


def test_a_rerun_in_the_bucket_redoes_no_step(runs, monkeypatch):
    """Run again: every step finds its output and is skipped. Written again: job.json, the report, and
    the stats.json of the curation and pack runs (each run records its own, shards skipped included)."""
    _, remote, job, _ = runs
    before = files(remote)
    written = []
    commit = storage.Pending.commit

    def recording(self):
        written.append(str(self.location))
        commit(self)

    monkeypatch.setattr(storage.Pending, "commit", recording)
    run_job(job, RunOptions(progress=False))
    after = files(remote)
    records = ("job.json", "report.html", "stats.json", "packed/stats.json")
    assert sorted(w[len(remote) + 1:] for w in written) == sorted(["job.json", "job.json", "report.html", "stats.json",
                                                                   "packed/stats.json"]), written
    assert {k: v for k, v in after.items() if k not in records} == {k: v for k, v in before.items() if k not in records}


def test_the_loader_reads_a_phase_straight_from_the_bucket_with_ranged_reads(runs, monkeypatch):
    local, remote, _, _ = runs
    for phase in ("one", "two"):
        from_disk = list(PhaseLoader(local / "manifest.json", phase, batch_size=4))
        from_bucket = list(PhaseLoader(f"{remote}/manifest.json", phase, batch_size=4))
        assert len(from_bucket) == len(from_disk) > 2
        for mine, theirs in zip(from_bucket, from_disk):
            assert mine.keys() == theirs.keys()
            for key in mine:
                assert (torch.equal(mine[key], theirs[key]) if torch.is_tensor(mine[key]) else mine[key] == theirs[key]), key
    # DataLoader workers (forked) open their own store connections
    with_workers = list(PhaseLoader(f"{remote}/manifest.json", "two", batch_size=4, num_workers=2))
    assert len(with_workers) == len(from_disk)
    assert all(torch.equal(mine["input_ids"], theirs["input_ids"]) for mine, theirs in zip(with_workers, from_disk))

    # Without verification, the .bin objects are read only where the served sequences lie: one ranged
    # read of seq_len tokens per sequence, far from the shards' whole size.
    reads: list[tuple[str, int]] = []
    opened = storage.open_input

    class Counting:
        def __init__(self, location, handle):
            self.location, self.handle = location, handle

        def read_at(self, nbytes, offset):
            data = self.handle.read_at(nbytes, offset)
            reads.append((self.location, len(data)))
            return data

        def __getattr__(self, name):
            return getattr(self.handle, name)

    def counting_open(location):
        handle = opened(location)
        return Counting(str(location), handle) if str(location).endswith(".bin") else handle

    monkeypatch.setattr(storage, "open_input", counting_open)
    loader = PhaseLoader(f"{remote}/manifest.json", "two", batch_size=4, verify=False)
    served = sum(int(batch["input_ids"].shape[0]) for batch in loader)
    row_bytes = 64 * 2  # seq_len 64, uint16
    assert len(reads) == served and all(size == row_bytes for _, size in reads)
    whole = sum(e.size for e in storage.list_files(f"{remote}/packed") if e.relative.endswith(".bin"))
    assert served * row_bytes < whole / 2
    assert not [k for k, _ in reads if not k.startswith(remote)]


def test_the_tokenizer_written_in_the_bucket_encodes_from_there(runs):
    """The pack step read the tokenizer from its key (no local copy): the Encoder takes the URI."""
    from curation.tokenizer.encode import Encoder

    local, remote, _, _ = runs
    from_bucket = Encoder(f"{remote}/tokenizer/tokenizer.json")
    from_disk = Encoder(local / "tokenizer" / "tokenizer.json")
    assert from_bucket.sha256 == from_disk.sha256 == hashlib.sha256(
        storage.read_bytes(f"{remote}/tokenizer/tokenizer.json")).hexdigest()
    assert storage.read_json(f"{remote}/manifest.json")["tokenizer_sha256"] == from_bucket.sha256
