"""LSH candidates that verification cannot disconnect (issue 24 item 2).

datatrove's `test_buckets_and_cluster` (tests/pipeline/dedup/test_minhash.py) plants six clusters of
400-character windows of one text at offsets 0-60 characters apart. Exact Jaccard of the shingles plus
connected components gives back the six; a star from each bucket's first member found four, because
a pair to the first member that fails verification was the member's only chance. Ported here on
datatrove's own text (the lorem ipsum passage of its test) and on a real article of the shared data.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from conftest import read_jsonl, write_parquet
from curation.stages import minhash_dedup as mh
from curation.stages import text_rules as tr
from test_dedup import run
from test_dedup_lineage import output

# The passage of datatrove's test (public lorem ipsum filler), its last sentences cut.
LOREM = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit. Aliquam euismod vel ante vitae rhoncus. Curabitur "
    "eu lectus et magna maximus facilisis eu non magna. Maecenas sed velit vitae est ornare placerat. Vestibulum "
    "quis consectetur nunc, a feugiat lorem. Cras in ipsum fringilla, vestibulum urna sit amet, viverra tortor. "
    "Orci varius natoque penatibus et magnis dis parturient montes, nascetur ridiculus mus. Morbi euismod "
    "vestibulum elit id placerat. Fusce malesuada ultricies condimentum. Cras tincidunt eget lorem nec hendrerit. "
    "Aenean mattis arcu dolor, id semper velit ullamcorper malesuada. Aliquam non ipsum et eros venenatis "
    "aliquet. Proin eleifend interdum scelerisque. Interdum et malesuada fames ac ante ipsum primis in faucibus. "
    "Mauris nunc sapien, molestie eget convallis at, maximus nec ipsum. Morbi quam diam, blandit ut mollis at, "
    "varius eu tellus. Maecenas sem justo, porttitor at odio nec, interdum posuere ex.\n\n"
    "Aliquam pretium ac nulla et porttitor. Nunc quis felis posuere, lobortis magna quis, imperdiet nulla. "
    "Maecenas tempor, mi vel vestibulum tempus, arcu elit scelerisque erat, eu molestie velit eros id metus. "
    "Class aptent taciti sociosqu ad litora torquent per conubia nostra, per inceptos himenaeos. Proin fringilla "
    "viverra urna eu dictum. Suspendisse interdum, leo non sagittis pulvinar, mauris est euismod ante, et luctus "
    "nisi est id odio. Proin purus nunc, feugiat id condimentum eu, efficitur at diam. Quisque aliquet felis non "
    "risus rutrum, eu porttitor justo venenatis. Donec ut est felis. Proin risus augue, gravida fermentum "
    "elementum eu, varius eget tortor. Sed a sem quis tortor ultrices elementum. Nullam tempor rutrum ipsum id "
    "eleifend. Donec a elit tincidunt, sagittis magna a, pretium felis.\n\n"
    "Sed ut faucibus dui, a sodales nunc. Praesent fermentum diam quis augue porttitor vulputate. Mauris pretium "
    "ipsum ut erat hendrerit eleifend. Maecenas consectetur elit a ligula auctor porta. Duis vitae diam ac velit "
    "porttitor tempor. Quisque at arcu a augue dictum molestie et sed erat. Donec fermentum pulvinar elit. Morbi "
    "orci nisi, condimentum non tincidunt sit amet, hendrerit non justo. Ut fringilla dolor neque, ut porttitor "
    "ante congue vitae. In aliquam augue a sapien sodales ornare. In in maximus nunc. Quisque turpis nibh, "
    "commodo non semper non, hendrerit a massa.\n\n"
    "Suspendisse potenti. Ut feugiat nibh ex. Nunc eget ligula ut massa tempus pretium vitae et mauris. "
    "Suspendisse potenti. Vivamus euismod ipsum est, id consectetur lorem suscipit non. Integer ac felis egestas "
    "risus ornare luctus nec vel massa. Donec scelerisque enim eu nulla commodo fringilla. Donec et pulvinar "
    "dolor, sit amet tristique risus. Cras et est id leo malesuada sollicitudin.\n\n"
    "Quisque et aliquet diam. Aenean euismod efficitur enim, non semper eros. Nullam molestie vehicula eros, nec "
    "porttitor justo feugiat nec. Maecenas fringilla eleifend augue, eu mollis arcu vulputate ac. Quisque "
    "ullamcorper turpis sed tristique dapibus. Etiam imperdiet pulvinar fringilla. Nulla sed est eget odio "
    "dictum pretium. Cras ultricies nibh libero, efficitur consequat neque semper id."
)
# datatrove's planted clusters: character offsets of 400-character windows.
CLUSTERS = [[0, 20, 50], [400, 420], [800, 810, 820, 840, 860], [1205, 1215, 1225, 1245], [1600], [2000]]


def shingle_sets(texts: list[str]) -> list[set[int]]:
    """The stage's own shingles (word 5-grams, hashed as `shingle_hash32`), per document."""
    hashes, docs = mh.shingle_hashes(tr.words(pa.array(texts), np.zeros(len(texts), bool)), 5)
    sets: list[set[int]] = [set() for _ in texts]
    for h, d in zip(hashes.tolist(), docs.tolist()):
        sets[d].add(h)
    return sets


def exact_jaccard_clusters(texts: list[str], threshold: float = 0.8) -> list[int]:
    """Cluster label per document: pairs with exact Jaccard >= threshold, connected components."""
    sets = shingle_sets(texts)
    src, dst = [], []
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            if len(sets[i] & sets[j]) >= threshold * len(sets[i] | sets[j]):
                src.append(i)
                dst.append(j)
    label = list(range(len(texts)))
    if src:
        nodes, root = mh.connected_components(np.array(src), np.array(dst))
        for node, r in zip(nodes.tolist(), root.tolist()):
            label[node] = r
    return label


def as_partition(labels) -> set[frozenset]:
    groups: dict = {}
    for i, label in enumerate(labels):
        groups.setdefault(label, set()).add(i)
    return {frozenset(g) for g in groups.values()}


def planted_docs(text: str) -> tuple[list[str], set[frozenset]]:
    texts, truth, i = [], set(), 0
    for cluster in CLUSTERS:
        texts += [text[x:x + 400] for x in cluster]
        truth.add(frozenset(range(i, i + len(cluster))))
        i += len(cluster)
    return texts, truth


def stage_partition(tmp_path, texts: list[str], **options) -> set[frozenset]:
    folder = tmp_path / "in"
    folder.mkdir(parents=True, exist_ok=True)
    # two shards, interleaved, so that pairs cross shards
    rows = [{"id": f"{i:03d}", "text": t} for i, t in enumerate(texts)]
    write_parquet(folder / "a.parquet", rows[0::2])
    write_parquet(folder / "b.parquet", rows[1::2])
    run(folder, tmp_path / "out", [{"name": "minhash_dedup", "partitions": 3, **options}])
    table = output(tmp_path / "out")
    labels = [None] * len(texts)
    for doc, cluster in zip(table.column("id").to_pylist(), table.column("dup_cluster").to_pylist()):
        labels[int(doc)] = cluster if cluster is not None else f"single-{doc}"
    return as_partition(labels)


def all_bucket_pairs_verified(texts: list[str]) -> set[frozenset]:
    """The reference for the candidate scheme: every pair that shares a band, verified by the estimated
    Jaccard as the stage does, then connected components. A scheme that verification cannot disconnect
    finds exactly these clusters."""
    stage = mh.MinHashDedup()
    sig = stage.signatures(pa.array(texts), None)
    keys = mh.band_keys(sig, stage.bands, stage.rows)
    pairs = [(a, b) for a in range(len(texts)) for b in range(a + 1, len(texts))
             if (keys[a] == keys[b]).any() and (sig[a] == sig[b]).mean() >= stage.config.threshold]
    labels = list(range(len(texts)))
    if pairs:
        nodes, root = mh.connected_components(np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs]))
        for node, r in zip(nodes.tolist(), root.tolist()):
            labels[node] = r
    return as_partition(labels)


@pytest.mark.parametrize("source", ["datatrove_lorem", "wikitext_article"])
def test_planted_clusters_of_datatrove(tmp_path, source):
    if source == "datatrove_lorem":
        text = LOREM
    else:  # the same offsets in a real article (blank lines folded)
        article = next(r["text"] for r in read_jsonl("en_wikitext2_valid_test.jsonl.gz") if len(r["text"]) > 5000)
        text = " ".join(article.split())
    texts, truth = planted_docs(text)
    # datatrove's expectation holds for exact Jaccard + connected components on our shingles ...
    assert as_partition(exact_jaccard_clusters(texts)) == truth
    # ... and for the stage's LSH candidates and components without verification (what datatrove runs):
    # every planted cluster is connected by the pairs drawn from its buckets.
    assert stage_partition(tmp_path / "unverified", texts, verify="none") == truth
    # With verification the stage finds what verifying every pair of every bucket finds: the pairs it
    # draws cannot disconnect a cluster. What it still misses is the estimate's: the windows at 0 and
    # 20 characters (exact Jaccard 0.833) agree on 100 of 128 minima, 0.78 < 0.8 (one standard
    # deviation of the estimate at 128 permutations is 0.033).
    verified = stage_partition(tmp_path / "verified", texts)
    assert verified == all_bucket_pairs_verified(texts)
    assert len(verified & truth) >= 4, sorted(map(sorted, verified))
    # Verified on the shingle sets (`verify: exact`), the pair at 0.833 stays: datatrove's text gives
    # every cluster. In the article the windows at 20 and 50 share no band (an LSH miss, which no
    # verification recovers), so there only: exact loses no cluster that the estimate finds.
    exact = stage_partition(tmp_path / "exact", texts, verify="exact")
    if source == "datatrove_lorem":
        assert exact == truth
    assert len(exact & truth) >= len(verified & truth)


def test_star_pairs_would_lose_a_member():
    """The failure the issue describes, on the planted set: cluster [0, 20, 50] is held together by
    20; 0 and 50 alone are under the threshold. A star from 0 reaches 50 only through the failing
    pair, the window pairs every member with every other."""
    texts, _ = planted_docs(LOREM)
    sets = shingle_sets(texts[:3])
    jaccard = lambda a, b: len(sets[a] & sets[b]) / len(sets[a] | sets[b])  # noqa: E731
    assert jaccard(0, 2) < 0.8 <= min(jaccard(0, 1), jaccard(1, 2))
    key = np.full(3, 7, np.uint64)
    src, dst = mh.bucket_pairs(key, np.array([0, 20, 50], np.int64), neighbours=1)
    assert {(20, 50), (0, 20), (0, 50)} == set(zip(src.tolist(), dst.tolist()))


def test_bucket_pairs_are_bounded_and_connected():
    rng = np.random.default_rng(0)
    sizes = [1, 2, 3, 5, 9, 10, 40, 5000]
    key = np.concatenate([np.full(n, rng.integers(1, 2**63), np.uint64) for n in sizes])
    node = rng.permutation(len(key)).astype(np.int64) + (3 << 40)
    src, dst = mh.bucket_pairs(key, node, neighbours=4)
    assert (src < dst).all() and len(set(zip(src.tolist(), dst.tolist()))) == len(src)
    start = 0
    for n in sizes:
        members = set(node[start:start + n].tolist())
        inside = np.isin(src, list(members))
        pairs = int(inside.sum())
        assert pairs == (n * (n - 1) // 2 if n <= 9 else 4 * n), n  # all pairs up to 2*4+1, then 4 a member
        if n > 1:  # every bucket is one component
            nodes, root = mh.connected_components(src[inside], dst[inside])
            assert len(nodes) == n and len(set(root.tolist())) == 1
        start += n
