#!/usr/bin/env bash
# Build KenLM from the `kenlm` sdist on PyPI and cache it, so that `curation train-lm` has `lmplz` and
# `build_binary` and the `quality` stage has its compiled batch scorer (stages/quality/kenlm_scorer.cc
# linked against KenLM's libraries: lib/libcuration_kenlm.so). Installs the Debian build packages it
# needs (cmake, Boost, Eigen, compression libraries) when they are missing. Idempotent: a cached build
# of the same version is kept; the scorer is rebuilt only when its source changes (a few seconds).
#   CURATION_KENLM_DIR   where the build goes (default ~/.cache/curation/kenlm)
set -euo pipefail

VERSION=0.3.0
BUILD="$VERSION-2"  # 2: KenLM's libraries and headers are kept for the scorer
MAX_ORDER=7
DEST="${CURATION_KENLM_DIR:-$HOME/.cache/curation/kenlm}"
PYTHON="${PYTHON:-python3}"
SCORER_SOURCE="$(cd "$(dirname "$0")/.." && pwd)/stages/quality/kenlm_scorer.cc"

install_packages() {
  local missing=()
  for package in "$@"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
  done
  (( ${#missing[@]} )) || return 0
  echo "kenlm: installing build packages: ${missing[*]}"
  local sudo=""
  [[ "$(id -u)" == 0 ]] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || {
    $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q "${missing[@]}" >/dev/null
  }
}

if ! [[ -x "$DEST/bin/lmplz" && -x "$DEST/bin/build_binary" && -f "$DEST/lib/libkenlm.a" \
        && "$(cat "$DEST/VERSION" 2>/dev/null)" == "$BUILD" ]]; then
  install_packages cmake g++ make libboost-program-options-dev libboost-system-dev libboost-thread-dev \
                   libboost-test-dev libeigen3-dev zlib1g-dev libbz2-dev liblzma-dev
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  echo "kenlm: building lmplz, build_binary and KenLM's libraries $VERSION (about a minute)"
  "$PYTHON" -m pip download --quiet --no-deps --no-binary kenlm "kenlm==$VERSION" -d "$work" 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" >&2 || true
  tar -xzf "$work/kenlm-$VERSION.tar.gz" -C "$work"
  src="$work/kenlm-$VERSION"
  cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DKENLM_MAX_ORDER=$MAX_ORDER >"$work/cmake.log" 2>&1 \
    || { cat "$work/cmake.log"; exit 1; }
  make -C "$work/build" -j"$(nproc)" lmplz build_binary kenlm kenlm_util >"$work/make.log" 2>&1 \
    || { tail -50 "$work/make.log"; exit 1; }
  rm -rf "$DEST.tmp"
  mkdir -p "$DEST.tmp/bin" "$DEST.tmp/lib" "$DEST.tmp/include"
  cp "$work/build/bin/lmplz" "$work/build/bin/build_binary" "$DEST.tmp/bin/"
  cp "$work/build/lib/libkenlm.a" "$work/build/lib/libkenlm_util.a" "$DEST.tmp/lib/"
  (cd "$src" && find lm util -name '*.hh' -o -name '*.h') | (cd "$src" && xargs cp --parents -t "$DEST.tmp/include")
  echo "$BUILD" >"$DEST.tmp/VERSION"
  rm -rf "$DEST"
  mv "$DEST.tmp" "$DEST"
  echo "kenlm: $DEST"
fi

# The batch scorer: one C++ file against the cached libraries, rebuilt when the source changes.
stamp="$(sha256sum "$SCORER_SOURCE" | cut -c1-16)"
if [[ "$(cat "$DEST/lib/scorer.sha256" 2>/dev/null)" != "$stamp" || ! -f "$DEST/lib/libcuration_kenlm.so" ]]; then
  install_packages g++ zlib1g-dev libbz2-dev liblzma-dev
  g++ -O3 -DNDEBUG -std=c++17 -shared -fPIC -DKENLM_MAX_ORDER=$MAX_ORDER -I"$DEST/include" "$SCORER_SOURCE" \
      "$DEST/lib/libkenlm.a" "$DEST/lib/libkenlm_util.a" -lz -lbz2 -llzma -lpthread -o "$DEST/lib/libcuration_kenlm.so.tmp"
  mv "$DEST/lib/libcuration_kenlm.so.tmp" "$DEST/lib/libcuration_kenlm.so"
  echo "$stamp" >"$DEST/lib/scorer.sha256"
  echo "kenlm: scorer $DEST/lib/libcuration_kenlm.so"
fi

# A kernel of one C++ file needing only g++ (no KenLM): built into $DEST/lib/libcuration_NAME.so, again
# whenever its source changes (a stamp of the source's sha256 beside it).
build_kernel() {
  local name="$1" source="$2" what="$3" stamp
  stamp="$(sha256sum "$source" | cut -c1-16)"
  if [[ "$(cat "$DEST/lib/$name.sha256" 2>/dev/null)" != "$stamp" || ! -f "$DEST/lib/libcuration_$name.so" ]]; then
    install_packages g++
    g++ -O3 -DNDEBUG -std=c++17 -shared -fPIC "$source" -o "$DEST/lib/libcuration_$name.so.tmp"
    mv "$DEST/lib/libcuration_$name.so.tmp" "$DEST/lib/libcuration_$name.so"
    echo "$stamp" >"$DEST/lib/$name.sha256"
    echo "kenlm: $what $DEST/lib/libcuration_$name.so"
  fi
}
STAGES_DIR="$(cd "$(dirname "$0")/.." && pwd)/stages"

# The rule stages' kernels: without them the rule stages compute the same decisions in numpy
# (stages/text_rules_native.py).
build_kernel rules "$STAGES_DIR/text_rules.cc" "rule kernels"

# The MinHash signature kernel: without it minhash_dedup computes the same signatures in numpy
# (stages/minhash_native.py).
build_kernel minhash "$STAGES_DIR/minhash_kernels.cc" "minhash kernel"

# The lid stage's compiled predict: stages/lid_kernels.cc linked with fastText's own C++ (src/*.cc but
# main.cc) from the sdist of the version the `lid` extra pins, so its floats are fastText's. Flags as
# fastText's setup.py, without -march=native, and no FMA contraction. Rebuilt when our source, the
# version or the flags change. Without it the lid stage calls the fasttext module (stages/lid_native.py).
FASTTEXT_VERSION="$( (grep -o 'fasttext==[0-9.]*' "$STAGES_DIR/../pyproject.toml" || true) | head -1 | cut -d= -f3)"
if [[ -z "$FASTTEXT_VERSION" ]]; then
  echo "kenlm: pyproject.toml pins no fasttext==VERSION: cannot tell which fastText sources the lid predict needs" >&2
  exit 1
fi
LID_FLAGS="-O3 -funroll-loops -pthread -std=c++17 -ffp-contract=off -DNDEBUG -fPIC -fvisibility=hidden"
lid_stamp="$( (cat "$STAGES_DIR/lid_kernels.cc"; echo "fasttext $FASTTEXT_VERSION $LID_FLAGS") | sha256sum | cut -c1-16)"
if [[ "$(cat "$DEST/lib/lid.sha256" 2>/dev/null)" != "$lid_stamp" || ! -f "$DEST/lib/libcuration_lid.so" ]]; then
  install_packages g++
  lid_work="$(mktemp -d)"
  trap 'rm -rf "${work:-}" "$lid_work"' EXIT
  echo "kenlm: building the lid predict with fastText $FASTTEXT_VERSION (about 30 s of CPU)"
  "$PYTHON" -m pip download --quiet --no-deps --no-binary fasttext "fasttext==$FASTTEXT_VERSION" -d "$lid_work" 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" >&2 || true
  if [[ ! -f "$lid_work/fasttext-$FASTTEXT_VERSION.tar.gz" ]]; then
    echo "kenlm: could not download the fasttext $FASTTEXT_VERSION sdist from PyPI (the lid predict is built from it)" >&2
    exit 1
  fi
  tar -xzf "$lid_work/fasttext-$FASTTEXT_VERSION.tar.gz" -C "$lid_work"
  fasttext_src="$lid_work/fasttext-$FASTTEXT_VERSION/src"
  mkdir -p "$lid_work/obj"
  # shellcheck disable=SC2086  # LID_FLAGS is a list of flags
  ls "$fasttext_src"/*.cc | grep -v '/main\.cc$' | cat - <(echo "$STAGES_DIR/lid_kernels.cc") \
    | xargs -P "$(nproc)" -I{} sh -c 'g++ '"$LID_FLAGS"' -I"'"$fasttext_src"'" -c "$1" -o "'"$lid_work"'/obj/$(basename "$1" .cc).o"' _ {}
  # shellcheck disable=SC2086
  g++ -shared $LID_FLAGS "$lid_work"/obj/*.o -o "$DEST/lib/libcuration_lid.so.tmp"
  mv "$DEST/lib/libcuration_lid.so.tmp" "$DEST/lib/libcuration_lid.so"
  echo "$lid_stamp" >"$DEST/lib/lid.sha256"
  echo "kenlm: lid predict $DEST/lib/libcuration_lid.so"
fi
