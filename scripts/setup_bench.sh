#!/usr/bin/env bash
# The reference tools for bench/ live in their own environment (.venv-bench): datatrove pulls packages
# that clash with ours (a second `fasttext` module). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
stamp=.venv-bench/.ready-$(sha256sum scripts/setup_bench.sh | cut -c1-16)
if [ ! -f "$stamp" ]; then
    [ -x .venv-bench/bin/python ] || "$PYTHON" -m venv .venv-bench
    .venv-bench/bin/python -m pip install -q "datatrove==0.10.1" "spacy>=3.7,<4" "nltk>=3.9,<4" "pyarrow>=15,<27" "tokenizers>=0.19,<1" "xxhash>=3,<4" "fasttext-numpy2-wheel" "fasteners" \
        >.venv-bench/pip.log 2>&1 || { cat .venv-bench/pip.log >&2; exit 1; }
    rm -f .venv-bench/.ready*
    touch "$stamp"
fi
# nltk's punkt data cannot be downloaded here: an empty punkt_tab gives its sentence splitter default
# parameters (no abbreviation list). Only datatrove's C4 filter counts sentences with it.
mkdir -p .cache/nltk_data/tokenizers/punkt_tab/english
for f in collocations.tab sent_starters.txt abbrev_types.txt ortho_context.tab; do
    touch ".cache/nltk_data/tokenizers/punkt_tab/english/$f"
done
