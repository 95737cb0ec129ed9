#!/usr/bin/env bash
# Build KenLM's `lmplz` and `build_binary` from the `kenlm` sdist on PyPI and cache them, so that
# `curation train-lm` has them. Installs the Debian build packages it needs (cmake, Boost, Eigen,
# compression libraries) when they are missing. Idempotent: a cached build of the same version is kept.
#   CURATION_KENLM_DIR   where the binaries go (default ~/.cache/curation/kenlm)
set -euo pipefail

VERSION=0.3.0
DEST="${CURATION_KENLM_DIR:-$HOME/.cache/curation/kenlm}"
PYTHON="${PYTHON:-python3}"

if [[ -x "$DEST/bin/lmplz" && -x "$DEST/bin/build_binary" && "$(cat "$DEST/VERSION" 2>/dev/null)" == "$VERSION" ]]; then
  exit 0
fi

PACKAGES=(cmake g++ make libboost-program-options-dev libboost-system-dev libboost-thread-dev
          libboost-test-dev libeigen3-dev zlib1g-dev libbz2-dev liblzma-dev)
missing=()
for package in "${PACKAGES[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if (( ${#missing[@]} )); then
  echo "kenlm: installing build packages: ${missing[*]}"
  SUDO=""
  [[ "$(id -u)" == 0 ]] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || {
    $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q "${missing[@]}" >/dev/null
  }
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "kenlm: building lmplz and build_binary $VERSION (about a minute)"
"$PYTHON" -m pip download --quiet --no-deps --no-binary kenlm "kenlm==$VERSION" -d "$work"
tar -xzf "$work/kenlm-$VERSION.tar.gz" -C "$work"
cmake -S "$work/kenlm-$VERSION" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DKENLM_MAX_ORDER=7 >"$work/cmake.log" 2>&1 \
  || { cat "$work/cmake.log"; exit 1; }
make -C "$work/build" -j"$(nproc)" lmplz build_binary >"$work/make.log" 2>&1 || { tail -50 "$work/make.log"; exit 1; }
mkdir -p "$DEST/bin.tmp"
cp "$work/build/bin/lmplz" "$work/build/bin/build_binary" "$DEST/bin.tmp/"
rm -rf "$DEST/bin"
mv "$DEST/bin.tmp" "$DEST/bin"
echo "$VERSION" >"$DEST/VERSION"
echo "kenlm: $DEST/bin"
