# The two commands of README.md. Each sets up what it needs (scripts/setup.sh is idempotent).
.PHONY: setup demo test bench

setup:
	@bash scripts/setup.sh

# The main job: quality models (trained when out/models lacks them), curation, tokenizer, packing,
# a two-phase manifest and out/demo/report.html, all from manifests/demo.yaml.
demo: setup
	.venv/bin/curation run manifests/demo.yaml

test: setup
	.venv/bin/pytest -q tests

bench: setup
	bash scripts/setup_bench.sh
	.venv/bin/python bench/bench_overhead.py
	.venv/bin/python bench/bench_lid.py
	.venv/bin/python bench/bench_rules.py
	.venv/bin/python bench/bench_minhash.py
	.venv/bin/python bench/bench_dedup_quality.py
	.venv/bin/python bench/bench_near_dedup.py
	.venv/bin/python bench/bench_cluster_agreement.py
	.venv/bin/python bench/bench_quality.py
	.venv/bin/python bench/bench_tokenizer.py
	.venv/bin/python bench/bench_loader.py
	.venv/bin/python bench/bench_pack.py
	.venv/bin/python bench/bench_peer.py
	.venv/bin/python bench/bench_tokenizer_scale.py
