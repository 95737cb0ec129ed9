"""One filesystem layer for every path a run reads or writes: local disk or object storage.

A location is a plain path (`out/demo`, `/data/x.jsonl.gz`, `~/in`) or a URI (`file://`, `s3://`,
`gs://`, `hdfs://`, and any scheme fsspec knows where pyarrow has no file system, `hf://` say).
`resolve(location)` gives (pyarrow.fs.FileSystem, path in it); everything else here is built on it, so
a reader, a writer and a completion marker behave the same on local disk and in a bucket.

Credentials and endpoints come from each store's usual environment, never from our config:
S3 from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_PROFILE`, the instance's
role, and the endpoint from `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` (boto3's variables; pyarrow does
not read them itself, so they are passed as `endpoint_override`: MinIO, Ceph, R2, a test server); GCS from
`GOOGLE_APPLICATION_CREDENTIALS` / the metadata server; fsspec stores from their own variables
(`HF_TOKEN`). Error messages name the location and the endpoint, never a secret.

**Publishing** (`Pending`, `publish`): an object appears whole under its final name or not at all.

- Local disk: bytes go to a temporary file beside the target (`.NAME.tmp-<12 hex>`), fsync, then
  `os.replace` onto the final name. A crash leaves only the temporary file, which a rerun removes.
  Inside a task (`grouped_flush`, which the executor puts around every shard and aggregate task), data
  files (`Pending(..., deferrable=True)`: Parquet outputs and spills, token shards) skip their own fsync:
  their names are recorded, and one `syncfs` of their file system makes them all durable before the next
  marker or index is published (`publish` is a barrier) and before the task reports success. So a
  marker on disk still vouches only for bytes on disk, at one flush per task instead of one per file
  (bench_peer's local run committed 1,178 files, 1,117 of them spills, and their fsyncs took 4.3 s of
  its 60 s on this machine). A killed process loses nothing either way (the page cache survives it);
  the flush is for a machine that loses power.
- Object stores have no rename (a copy would read and write every byte again, and a reader could list
  the temporary key). Bytes go to a local spool file first (`CURATION_SPOOL_DIR`, else the system
  temporary folder, in a folder per process that the next writer on the machine removes once the
  process is gone: one output file at a time per writer), and `commit()` uploads the spool file straight
  to the final key: one PUT, or a multipart upload for large files, which the store makes visible only
  when the upload completes. A worker killed during the upload leaves an incomplete multipart upload
  (invisible; a bucket lifecycle rule `AbortIncompleteMultipartUpload` removes its parts), never a
  partial object; no temporary key is ever created in the bucket. The upload is retried with backoff
  on transient errors: it is idempotent, since the same bytes go to the same key.
- Two attempts of one shard racing (a worker thought dead that was only slow, and its retry): outputs
  are deterministic (their bytes depend on the input and the config only), so both upload the same
  bytes to the same key; whichever completes last wins and a reader sees one whole copy either way.
  Completion markers are written after the outputs they vouch for, so a marker is never visible
  before its shard's files.

Python code never runs between the opening of an upload and its completion other than the copy of
the spool file: a pyarrow S3 output stream completes its upload when it is closed or collected, so
streaming a shard's batches straight into it would publish a partial file if a stage raised mid-shard.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import json
import logging
import os
import posixpath
import re
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import pyarrow as pa
import pyarrow.fs as pafs

from curation.errors import CurationError

log = logging.getLogger(__name__)

TMP_NAME = re.compile(r"^\..+\.tmp-[0-9a-f]{12}$")
PYARROW_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs")
# The variables through which stores are configured: handed from the driver to its Ray workers
# (executor.StageWorker), whose environment is the Ray instance's, fixed when it started.
STORE_ENVIRONMENT = re.compile(r"^(AWS_|GOOGLE_|GCS_|STORAGE_EMULATOR_HOST$|HF_|HUGGING_FACE_HUB_TOKEN$|"
                               r"CURATION_SPOOL_DIR$|ARROW_S3_|HADOOP_|CLASSPATH$)")
UPLOAD_ATTEMPTS = 4
S3_ATTEMPTS = 5  # the AWS SDK's own retries per request (throttling, 5xx, dropped connections), with backoff
CONNECT_TIMEOUT_S = 5.0


class StorageError(CurationError, OSError):
    """A store cannot be reached or read as asked; the message names the location, not a secret."""


def is_uri(location: str | Path) -> bool:
    return isinstance(location, str) and "://" in location and not location.startswith("file://")


def scheme_of(location: str | Path) -> str:
    text = str(location)
    return text.split("://", 1)[0].lower() if "://" in text else ""


def _endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


@functools.lru_cache(maxsize=16)
def _s3(endpoint: str | None, region: str | None, _credentials_key: tuple[str | None, ...]) -> pafs.FileSystem:
    kwargs: dict[str, Any] = {"retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=S3_ATTEMPTS),
                              "connect_timeout": CONNECT_TIMEOUT_S}
    if endpoint:
        kwargs["endpoint_override"] = endpoint
        if endpoint.startswith("http://"):
            kwargs["scheme"] = "http"
    if region:
        kwargs["region"] = region
    # Credentials: the SDK's default chain (environment, profile, instance role), read by the SDK itself.
    return pafs.S3FileSystem(**kwargs)


@functools.lru_cache(maxsize=16)
def _other(scheme: str, netloc: str, _env_key: tuple[str, ...]) -> pafs.FileSystem:
    if scheme in PYARROW_SCHEMES:
        filesystem, _ = pafs.FileSystem.from_uri(f"{scheme}://{netloc}/")
        return filesystem
    try:
        import fsspec  # only for schemes pyarrow has no file system for (hf://...): optional
    except ImportError:  # pragma: no cover - fsspec ships with our dependencies
        raise StorageError(f"{scheme}:// needs fsspec (pip install fsspec)") from None
    try:
        return pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem(scheme)))
    except (ImportError, ValueError) as exc:
        raise StorageError(f"no file system for {scheme}:// locations: {exc}") from None


def _env_key() -> tuple[str, ...]:
    """A filesystem is cached per store environment: a changed endpoint or key gives a new one."""
    return tuple(f"{k}={v}" for k, v in sorted(os.environ.items()) if STORE_ENVIRONMENT.match(k))


def resolve(location: str | Path) -> tuple[pafs.FileSystem, str]:
    """(file system, path in it) for a plain path or a URI."""
    text = str(location)
    if "://" not in text:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(text))
    scheme, rest = text.split("://", 1)
    scheme = scheme.lower()
    if scheme == "file":
        return pafs.LocalFileSystem(), os.path.abspath(rest)
    if scheme in ("s3", "s3a"):
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        return _s3(_endpoint(), region, _env_key()), rest.rstrip("/")
    netloc = rest.split("/", 1)[0]
    filesystem = _other(scheme, netloc, _env_key())
    if scheme in PYARROW_SCHEMES:
        _, path = pafs.FileSystem.from_uri(text)
        return filesystem, path
    return filesystem, rest.rstrip("/")


def describe_store(location: str | Path) -> str:
    """Where a location lives, for messages: the endpoint of an S3 location (never a credential: a
    user:password in the endpoint URL is cut)."""
    if scheme_of(location) in ("s3", "s3a"):
        endpoint = re.sub(r"//[^/@]*@", "//", _endpoint() or "AWS")
        return f" (endpoint {endpoint})"
    return ""


def _hint(message: str) -> str:
    lowered = message.lower()
    # A connection that failed never reached the store's checks: asked first. "403" as a whole number
    # only: an endpoint's port (127.0.0.1:54031) named in the message once read as a refusal.
    if any(word in lowered for word in ("network_connection", "could not resolve", "connection refused",
                                        "couldn't connect", "could not connect", "timed out", "timeout")):
        return "; is the store reachable from here (AWS_ENDPOINT_URL for an S3-compatible server)?"
    if any(word in lowered for word in ("access_denied", "accessdenied", "invalidaccesskeyid", "signaturedoesnotmatch",
                                        "credential", "forbidden", "unauthorized")) or re.search(r"\b403\b", lowered):
        return "; check the store's credentials in this environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, " \
               "AWS_PROFILE, the machine's role, GOOGLE_APPLICATION_CREDENTIALS)"
    if "nosuchbucket" in lowered or "bucket" in lowered and "not found" in lowered or "does not exist" in lowered:
        return "; does the bucket exist?"
    return ""


def storage_error(location: str | Path, what: str, exc: BaseException) -> StorageError:
    message = str(exc).splitlines()[0][:400] if str(exc) else type(exc).__name__
    return StorageError(f"{location}: cannot {what}{describe_store(location)}: {message}{_hint(message)}")


def _retry(fn: Callable[[], Any], location: str | Path, what: str, attempts: int = UPLOAD_ATTEMPTS) -> Any:
    """`fn` again after a transient store error, with exponential backoff (0.5, 1, 2 s). Only for
    idempotent steps (an upload of the same bytes to the same key)."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except OSError as exc:
            if attempt == attempts or not _transient(exc):
                raise storage_error(location, what, exc) from None
            log.warning("%s: %s failed (attempt %d of %d), retrying: %s", location, what, attempt, attempts, exc)
            time.sleep(0.5 * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def _transient(exc: OSError) -> bool:
    text = str(exc).lower()
    # pyarrow spells S3's codes with underscores ("AWS Error NO_SUCH_BUCKET during ..."), boto3 and
    # fsspec without: a missing bucket or a refused key is final, retrying only delays the error
    if any(word in text for word in ("access_denied", "accessdenied", "invalidaccesskeyid", "invalid_access_key_id",
                                     "nosuchbucket", "no_such_bucket", "signaturedoesnotmatch",
                                     "signature_does_not_match", "no such file", "not found")):
        return False
    return True


# --- paths ----------------------------------------------------------------------------------------


def join(base: str | Path, *parts: str) -> str:
    """`base/part/...` for a path or a URI (always `/` inside a URI)."""
    if is_uri(base):
        return posixpath.join(str(base).rstrip("/"), *parts)
    return os.path.join(str(base), *parts)


def parent(location: str | Path) -> str:
    if is_uri(location):
        return posixpath.dirname(str(location).rstrip("/"))
    return os.path.dirname(os.path.abspath(str(location)))


def basename(location: str | Path) -> str:
    return posixpath.basename(str(location).rstrip("/")) if is_uri(location) else os.path.basename(str(location))


def normalise(location: str | Path) -> str:
    """A location as runs name it: absolute for local paths, the URI itself otherwise."""
    if is_uri(location):
        return str(location).rstrip("/")
    text = str(location)
    if text.startswith("file://"):
        text = text[len("file://"):]
    return os.path.abspath(os.path.expanduser(text))


# --- reading and listing --------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    location: str  # a path or a URI, as the caller's base was given
    relative: str  # posix path under the listed folder
    size: int


def info(location: str | Path) -> pafs.FileInfo:
    filesystem, path = resolve(location)
    try:
        return filesystem.get_file_info(path)
    except OSError as exc:
        raise storage_error(location, "look it up", exc) from None


def exists(location: str | Path) -> bool:
    return info(location).type != pafs.FileType.NotFound


def is_file(location: str | Path) -> bool:
    return info(location).type == pafs.FileType.File


def is_dir(location: str | Path) -> bool:
    """A folder on disk; on an object store, a prefix under which some object lies."""
    return info(location).type == pafs.FileType.Directory


def size(location: str | Path) -> int:
    found = info(location)
    if found.type != pafs.FileType.File:
        raise StorageError(f"{location}: not a file")
    return int(found.size)


def list_files(folder: str | Path, recursive: bool = True) -> list[Entry]:
    """Every file under `folder`, sorted, in one listing (an object store lists a prefix page by page:
    never one request per folder or per file). A missing folder is empty."""
    filesystem, path = resolve(folder)
    try:
        infos = filesystem.get_file_info(pafs.FileSelector(path, recursive=recursive, allow_not_found=True))
    except OSError as exc:
        raise storage_error(folder, "list it", exc) from None
    base = str(folder).rstrip("/") if is_uri(folder) else normalise(folder)
    prefix = path.rstrip("/") + "/"
    found = []
    for item in infos:
        if item.type != pafs.FileType.File or not item.path.startswith(prefix):
            continue
        relative = item.path[len(prefix):]
        found.append(Entry(join(base, *relative.split("/")), relative, int(item.size or 0)))
    return sorted(found, key=lambda e: e.relative)


def names_in(folder: str | Path) -> set[str]:
    """File names directly in `folder` (one listing): completion markers are checked this way."""
    return {entry.relative for entry in list_files(folder, recursive=False)}


MAGIC = re.compile(r"[*?\[]")


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """glob.glob's rules over `/`-separated keys: `*` and `?` stay within one part, `**` spans parts."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape("["))
                i += 1
            else:
                body = pattern[i + 1:end]
                out.append("[^" + body[1:] + "]" if body.startswith("!") else "[" + body + "]")
                i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def glob(pattern: str) -> list[Entry]:
    """Files matching a glob on an object store, from one listing of the prefix before the first wildcard
    (recursive only when the rest of the pattern has a `/` or `**`). Hidden files (`.name`) are left out."""
    scheme, rest = pattern.split("://", 1)
    parts = rest.split("/")
    fixed = next((i for i, part in enumerate(parts) if MAGIC.search(part)), len(parts))
    if fixed == len(parts):  # no wildcard: the file itself
        return [Entry(pattern, basename(pattern), size(pattern))] if is_file(pattern) else []
    base = f"{scheme}://" + "/".join(parts[:fixed])
    remainder = "/".join(parts[fixed:])
    matcher = _glob_regex(remainder)
    found = []
    for entry in list_files(base, recursive="/" in remainder or "**" in remainder):
        if matcher.match(entry.relative) and not any(p.startswith(".") for p in entry.relative.split("/")):
            found.append(entry)
    return found


def parquet_files(folder: str | Path) -> list[str]:
    """The Parquet files directly in `folder` (sorted locations; temporary ones left out), one listing:
    what `sorted(glob(folder/*.parquet))` gives on disk, for a folder in a bucket too."""
    return [e.location for e in list_files(folder, recursive=False)
            if e.relative.endswith(".parquet") and not TMP_NAME.match(e.relative)]


def dataset(locations: list[str], **options: Any) -> Any:
    """`pyarrow.dataset.dataset` over files given as locations (all on one store)."""
    import pyarrow.dataset as ds  # late: it imports pandas (40 MB in every process that reads a dataset)

    if not locations or not is_uri(locations[0]):
        return ds.dataset([normalise(p) for p in locations], **options)
    filesystem, _ = resolve(locations[0])
    return ds.dataset([resolve(p)[1] for p in locations], filesystem=filesystem, **options)


def open_input(location: str | Path) -> pa.NativeFile:
    """A random-access file (Parquet footers, `tell()` for progress); on an object store reads are
    ranged GETs, so nothing is downloaded whole."""
    filesystem, path = resolve(location)
    try:
        return filesystem.open_input_file(path)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if info(location).type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"{location}: no such file") from None
        raise storage_error(location, "open it", exc) from None


def open_binary(location: str | Path) -> IO[bytes]:
    """A buffered Python file object (line iteration, `gzip.GzipFile(fileobj=...)`)."""
    if not is_uri(location):
        return open(normalise(location), "rb")
    return io.BufferedReader(open_input(location), buffer_size=1 << 20)  # type: ignore[arg-type]


def read_bytes(location: str | Path) -> bytes:
    if not is_uri(location):
        return Path(normalise(location)).read_bytes()
    with open_input(location) as handle:
        return handle.read()


def read_json(location: str | Path) -> Any:
    return json.loads(read_bytes(location).decode("utf-8"))


def parquet_source(location: str | Path) -> Any:
    """What `pq.ParquetFile` / `pq.read_table` take for this location: the path on disk, else an open file."""
    return normalise(location) if not is_uri(location) else open_input(location)


# --- writing --------------------------------------------------------------------------------------


def spool_dir() -> str:
    return os.environ.get("CURATION_SPOOL_DIR") or tempfile.gettempdir()


SPOOL_FOLDER = re.compile(r"^curation-spool-([0-9]+)$")


def sweep_spool() -> list[str]:
    """Remove the spool folders of processes that are gone (a worker killed mid-shard leaves its spool
    file behind); returns what was removed. Runs once per process, at its first spooled write."""
    removed = []
    try:
        names = os.listdir(spool_dir())
    except OSError:
        return removed
    for name in names:
        match = SPOOL_FOLDER.match(name)
        if not match or int(match.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(match.group(1)), 0)
            continue  # alive (or not ours to signal): leave it
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        folder = os.path.join(spool_dir(), name)
        for entry in os.listdir(folder) if os.path.isdir(folder) else []:
            if TMP_NAME.match(entry):
                Path(folder, entry).unlink(missing_ok=True)
        try:
            os.rmdir(folder)
            removed.append(folder)
        except OSError:
            pass
    return removed


_SPOOL: dict[int, str] = {}


def _spool_folder() -> str:
    """This process's spool folder (`curation-spool-<pid>` in `spool_dir()`)."""
    pid = os.getpid()  # a forked child gets its own
    if pid not in _SPOOL:
        sweep_spool()
        folder = os.path.join(spool_dir(), f"curation-spool-{pid}")
        os.makedirs(folder, exist_ok=True)
        _SPOOL[pid] = folder
    return _SPOOL[pid]


# The data files committed without their own fsync inside this thread's `grouped_flush` (None outside).
_GROUP = threading.local()


@contextlib.contextmanager
def grouped_flush() -> Iterator[None]:
    """Within: deferrable local commits skip their fsync; they are flushed together before any `publish`
    and when the block ends without an error (a task that fails reports nothing a marker could vouch
    for; its retry writes the same files again). Nested blocks belong to the outermost one."""
    if getattr(_GROUP, "paths", None) is not None:
        yield
        return
    _GROUP.paths = []
    try:
        yield
        flush_group()
    finally:
        _GROUP.paths = None


def flush_group() -> None:
    """Make the files committed so far in this thread's group durable: one syncfs per file system
    (Linux), else an fsync of each."""
    paths = getattr(_GROUP, "paths", None)
    if not paths:
        return
    by_device: dict[int, str] = {}
    for path in paths:
        try:
            by_device.setdefault(os.stat(path).st_dev, path)
        except FileNotFoundError:  # removed since (a spill read and deleted in the same task)
            continue
    syncfs = getattr(_libc(), "syncfs", None)
    for path in by_device.values() if syncfs is not None else ():
        fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
        try:
            if syncfs(fd) != 0:
                raise OSError(ctypes.get_errno(), f"syncfs failed under {os.path.dirname(path)}")
        finally:
            os.close(fd)
    if syncfs is None:
        for path in paths:
            try:
                with open(path, "rb+") as handle:
                    os.fsync(handle.fileno())
            except FileNotFoundError:
                continue
    paths.clear()


@functools.cache
def _libc() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


class Pending:
    """One file being written: bytes go to `local_path` (a plain local file, so any writer can use it),
    and `commit()` publishes them under `location` whole (see the module docstring), `abort()` drops them.
    `deferrable`: a data file whose flush may join its task's group (`grouped_flush`); markers, indexes
    and files replacing a finished output are not."""

    def __init__(self, location: str | Path, deferrable: bool = False) -> None:
        self.location = location
        self.deferrable = deferrable
        self.remote = is_uri(location)
        token = uuid.uuid4().hex[:12]
        if self.remote:
            self.local_path = Path(_spool_folder()) / f".{basename(location)}.tmp-{token}"
        else:
            target = Path(normalise(location))
            target.parent.mkdir(parents=True, exist_ok=True)
            self.local_path = target.with_name(f".{target.name}.tmp-{token}")

    def commit(self) -> None:
        try:
            if not self.remote:  # a spool file for an upload needs no fsync: the store keeps the bytes
                group = getattr(_GROUP, "paths", None)
                if self.deferrable and group is not None:
                    target = normalise(self.location)
                    os.replace(self.local_path, target)
                    group.append(target)
                    return
                flush_group()  # a barrier: the group's data is on disk before this file vouches for it
                with open(self.local_path, "rb+") as handle:
                    os.fsync(handle.fileno())
                os.replace(self.local_path, normalise(self.location))
                return
            filesystem, path = resolve(self.location)

            def upload() -> None:
                # One upload straight to the final key: visible only once complete. Nothing but the
                # copy runs while the stream is open (a closed stream completes its upload).
                with filesystem.open_output_stream(path, compression=None) as out, \
                        open(self.local_path, "rb") as source:
                    out.upload(source)

            _retry(upload, self.location, "upload it")
        finally:
            if self.remote:
                self.local_path.unlink(missing_ok=True)

    def abort(self) -> None:
        self.local_path.unlink(missing_ok=True)


def publish(location: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """`write(file)` fills a file that then appears under `location` whole, or not at all."""
    pending = Pending(location)
    try:
        with open(pending.local_path, "wb") as handle:
            write(handle)
            handle.flush()
    except BaseException:
        pending.abort()
        raise
    try:
        pending.commit()
    except BaseException:
        pending.abort()
        raise


def write_bytes(location: str | Path, data: bytes) -> None:
    publish(location, lambda handle: handle.write(data))


def write_json(location: str | Path, data: object) -> None:
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    write_bytes(location, text.encode("utf-8"))


def make_dirs(location: str | Path) -> None:
    """A folder on disk; nothing on an object store (keys need no folders)."""
    if not is_uri(location):
        os.makedirs(normalise(location), exist_ok=True)


def delete(location: str | Path) -> None:
    """Delete one of our own files (a missing one is fine)."""
    if not is_uri(location):
        Path(normalise(location)).unlink(missing_ok=True)
        return
    filesystem, path = resolve(location)
    try:
        filesystem.delete_file(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if info(location).type != pafs.FileType.NotFound:
            raise storage_error(location, "delete it", exc) from None


def delete_tree(folder: str | Path) -> None:
    """Delete a folder of our own files (intermediates): on an object store, every key under the prefix."""
    filesystem, path = resolve(folder)
    try:
        if filesystem.get_file_info(path).type == pafs.FileType.NotFound:
            return
        filesystem.delete_dir(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise storage_error(folder, "delete it", exc) from None


def remove_empty_dirs(root: str | Path) -> None:
    """Local disk only: folders under `root` left empty, deepest first (object stores have none)."""
    if is_uri(root):
        return
    for dirpath, _, _ in sorted(os.walk(normalise(root)), key=lambda item: -len(item[0])):
        if os.path.normpath(dirpath) != os.path.normpath(normalise(root)):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass


def store_environment() -> dict[str, str]:
    """The store variables of this process, to hand to workers started elsewhere (executor)."""
    return {k: v for k, v in os.environ.items() if STORE_ENVIRONMENT.match(k)}


def adopt_environment(variables: dict[str, str]) -> None:
    """Set the driver's store variables in a worker (the values differ or are missing here)."""
    for key, value in variables.items():
        if STORE_ENVIRONMENT.match(key) and os.environ.get(key) != value:
            os.environ[key] = value


def iter_bytes(location: str | Path, chunk: int = 1 << 20) -> Iterator[bytes]:
    with open_binary(location) as handle:
        while True:
            block = handle.read(chunk)
            if not block:
                return
            yield block
