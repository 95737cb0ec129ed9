"""The four rule stages' decisions on every document of the nine shared/data files, row for row, against
a recorded fixture (tests/fixtures/rule_decisions.json: the papers' settings), and those of the stages with
options under the options of the filter chain measured in bench/README.md (CHAIN_OPTIONS, the settings of
manifests/demo.yaml; tests/fixtures/rule_decisions_chain.json).

The fixture holds, per file and stage, a sha256 over (id, drop_reason, sha256 of the rewritten text where
the stage rewrote it) of every row in order, and the count of rows per reason, so that a failure says
which reasons moved. It guards rewrites of the rule kernels for speed (same decisions, or the test
fails) and makes deliberate rule changes visible: regenerate with

    .venv/bin/python tests/test_rules_decisions.py --write

and the diff of the fixture shows what each change did to the counts.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import DATA, read_jsonl  # noqa: E402

from curation.stage import DROP_REASON, TEXT, build_stage  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "rule_decisions.json"
CHAIN_FIXTURE = Path(__file__).parent / "fixtures" / "rule_decisions_chain.json"
STAGES = ["gopher_quality", "gopher_repetition", "c4", "fineweb"]
# The options of the filter chain (bench/bench_filter_chain.py's `after`, manifests/demo.yaml), each
# documented in its stage's Config.
CHAIN_OPTIONS = {
    "gopher_quality": {"skip_technical_lines": True},
    "gopher_repetition": {"skip_technical_lines": True, "reference_page_copies": 2},
    "c4": {"curly_bracket_scope": "code_pages", "min_sentences_words": 30, "trim_unterminated_tail": True,
           "extra_policy_phrases": ["©", "all rights reserved"]},
    "fineweb": {"reference_page_copies": 2},
}
FILES = sorted(p.name for p in DATA.glob("*.jsonl.gz"))
BATCH_ROWS = 4096  # the executor's default batch size; the rules decide per document whatever the batch


def batches(name: str) -> list[pa.RecordBatch]:
    rows = read_jsonl(name)
    out = []
    for i in range(0, len(rows), BATCH_ROWS):
        chunk = rows[i:i + BATCH_ROWS]
        out.append(pa.RecordBatch.from_pydict({
            "id": [r["id"] for r in chunk], TEXT: [r["text"] or "" for r in chunk],
            "lang": pa.array([r.get("lang") for r in chunk], pa.string()),
            DROP_REASON: pa.nulls(len(chunk), pa.string())}))
    return out


def decisions(stage_name: str, file_batches: list[pa.RecordBatch], options: dict | None = None) -> dict:
    stage = build_stage({"name": stage_name, **(options or {})})
    stage.setup()
    digest, counts = hashlib.sha256(), Counter()
    for batch in file_batches:
        out = stage(batch)
        for doc, before, after, reason in zip(batch.column("id").to_pylist(), batch.column(TEXT).to_pylist(),
                                              out.column(TEXT).to_pylist(), out.column(DROP_REASON).to_pylist()):
            rewritten = None if after == before else hashlib.sha256(after.encode()).hexdigest()
            digest.update(json.dumps([doc, reason, rewritten]).encode() + b"\n")
            counts[reason or "kept"] += 1
            if rewritten is not None:
                counts["rewritten"] += 1
    return {"sha256": digest.hexdigest(), "counts": dict(sorted(counts.items()))}


def all_decisions() -> tuple[dict, dict]:
    """(the papers' settings, the chain's options): per file, per stage."""
    paper, chain = {}, {}
    for name in FILES:
        file_batches = batches(name)
        paper[name] = {stage: decisions(stage, file_batches) for stage in STAGES}
        chain[name] = {stage: decisions(stage, file_batches, options) for stage, options in CHAIN_OPTIONS.items()}
    return paper, chain


@pytest.fixture(scope="module")
def recorded() -> dict:
    return json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module")
def recorded_chain() -> dict:
    return json.loads(CHAIN_FIXTURE.read_text())


def changes(now: dict, then: dict) -> dict | str:
    return {k: (then["counts"].get(k, 0), now["counts"].get(k, 0))
            for k in sorted(set(now["counts"]) | set(then["counts"]))
            if then["counts"].get(k, 0) != now["counts"].get(k, 0)} or "same counts, different rows or rewritten text"


@pytest.mark.slow
@pytest.mark.parametrize("name", FILES)
def test_decisions_match_the_recorded_fixture(name, recorded, recorded_chain):
    """Both fixtures in one pass over the file (it is read once)."""
    for fixture in (recorded, recorded_chain):
        assert name in fixture, f"{name} has no recorded decisions: regenerate the fixtures (see module docstring)"
    file_batches = batches(name)
    changed = {}
    for stage in STAGES:
        now, then = decisions(stage, file_batches), recorded[name][stage]
        if now["sha256"] != then["sha256"]:
            changed[stage] = changes(now, then)
    for stage, options in CHAIN_OPTIONS.items():
        now, then = decisions(stage, file_batches, options), recorded_chain[name][stage]
        if now["sha256"] != then["sha256"]:
            changed[f"{stage} with {options}"] = changes(now, then)
    assert not changed, f"{name}: decisions changed (reason: (recorded, now)): {changed}"


def test_the_demo_manifest_runs_the_chain():
    """manifests/demo.yaml's rule stages carry CHAIN_OPTIONS, the options bench/README.md measures."""
    import yaml

    manifest = yaml.safe_load((Path(__file__).parents[1] / "manifests" / "demo.yaml").read_text())
    stages = {s["name"]: s for s in manifest["stages"]}
    for stage, options in CHAIN_OPTIONS.items():
        assert {k: stages[stage].get(k) for k in options} == options, stage


if __name__ == "__main__":
    if "--write" not in sys.argv:
        sys.exit("usage: python tests/test_rules_decisions.py --write")
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    paper, chain = all_decisions()
    FIXTURE.write_text(json.dumps(paper, indent=1) + "\n")
    CHAIN_FIXTURE.write_text(json.dumps(chain, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {FIXTURE} and {CHAIN_FIXTURE}")
