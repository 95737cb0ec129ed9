# The two commands of README.md. Each sets up what it needs (scripts/setup.sh is idempotent).
.PHONY: setup demo test bench

setup:
	@bash scripts/setup.sh

DATA := ../shared/data
MODELS := out/models

demo: setup $(MODELS)/quality.json
	.venv/bin/curation run manifests/demo.yaml

# Quality models for the demo, trained on gold text from ../shared/data (never shipped in the package):
# English WikiText + GUM and Chinese MSRA news + UD wiki for KenLM; gold vs the Common Crawl sample for
# the English classifier.
$(MODELS)/quality.json:
	.venv/bin/curation train-lm --lang en --out $(MODELS) $(DATA)/en_wikitext2_valid_test.jsonl.gz $(DATA)/en_gum_docs.jsonl.gz
	.venv/bin/curation train-lm --lang zh --out $(MODELS) $(DATA)/zh_msra_news.jsonl.gz $(DATA)/zh_ud_gsdsimp_wiki.jsonl.gz
	.venv/bin/curation train-lm --kind classifier --lang en --out $(MODELS) --negative $(DATA)/web_commoncrawl_samples.jsonl.gz \
		-- $(DATA)/en_wikitext2_valid_test.jsonl.gz $(DATA)/en_gum_docs.jsonl.gz

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
