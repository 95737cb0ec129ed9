#!/usr/bin/env bash
# Sets up everything the project needs on a fresh machine of this kind: a virtual environment in .venv
# with the package (editable) and its extras. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
EXTRAS=${EXTRAS:-dev,lid,quality,loader}

# KenLM's lmplz/build_binary for `curation train-lm`: built once from the kenlm sdist, cached outside
# the repository (its own quick check, so it runs before the stamp).
PYTHON="$PYTHON" scripts/build_kenlm.sh

# Headless Chromium for the report test (tests/test_job.py renders OUT/report.html), from Debian.
if [[ ",$EXTRAS," == *",dev,"* ]] && ! command -v chromium >/dev/null 2>&1; then
    echo "setup: installing Debian's chromium (the report test renders the page headless)"
    SUDO=""
    [[ "$(id -u)" == 0 ]] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -q chromium >/dev/null 2>&1 || {
        $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q chromium >/dev/null
    }
fi

stamp=.venv/.installed-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)-$EXTRAS
if [ -f "$stamp" ]; then
    exit 0
fi

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! .venv/bin/python -m pip install -q -e ".[$EXTRAS]" >.venv/pip.log 2>&1; then
    grep -v "is ignored: it is neither a file nor a directory" .venv/pip.log >&2
    echo "setup: pip install failed (log: .venv/pip.log)" >&2
    exit 1
fi
.venv/bin/python -c "import curation, curation.stages, curation.tokenizer, kenlm"
# Models the stages load (cached outside the repository, checked by hash).
.venv/bin/curation fetch-models
rm -f .venv/.installed-*
touch "$stamp"
