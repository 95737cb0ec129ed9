"""Runs a pipeline over the input shards: on Ray actors (the default) or in-process (`kind: local`).

The unit of work is one input shard: a worker streams its record batches through a segment of stages
(in the last pass, on to the sinks: `curation.sink`) and commits the shard's outputs atomically, then a
completion marker; each sink's `finish` runs once after the last shard. So a killed worker loses at most
the shard it held, which is retried on a new actor; a killed driver is resumed by running the same
command again, which skips every shard whose marker exists. Output bytes do not depend on the
executor, on the number of workers or on interruptions.

The output folder and the inputs may be in object storage (`s3://bucket/run`): every file goes through
`curation.storage`, whose docstring gives the commit protocol on a store without rename (a spool file
uploaded straight to the final key, visible only once complete; a retried shard uploads the same
bytes). Finished shards are found with one listing of each marker folder, not a request per shard.

Why plain actors and not Ray Data `map_batches`: outputs are per input shard with a completion marker
each (resumable, atomic, traceable), which Ray Data's writers do not give; and one actor per CPU that
reads, runs and writes a whole shard keeps the CPUs busy without the read tasks that an actor pool
starves (see bench/bench_overhead.py for the measured overhead against a plain pyarrow loop).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from tqdm import tqdm

from curation import storage
from curation.config import ExecutorConfig, PipelineConfig
from curation.embedded_ray import start_embedded
from curation.errors import CurationError, ShardFailure
from curation.io import Shard, list_shards, write_json_atomic
from curation.memory import release_memory, tune_allocator
from curation.output_folder import OutputFolderError, check_not_inputs, check_writable_here, remove_run_outputs
from curation.pipeline import DOCUMENTS, DocumentsSink, Layout, Segment, ShardProcessor, plan_segments
from curation.sink import FinishContext, Sink, split_sinks
from curation.stage import AggregateContext, build_stage
from curation.stats import RunStats, ShardStats, stage_key

log = logging.getLogger(__name__)

FINGERPRINT_VERSION = 1
PROGRESS_EVERY_S = 1.0  # how often the progress bar asks running stage actors how far they got


class PipelineError(CurationError, RuntimeError):
    """The run cannot go on; the message says why and what to do."""


# --- backends -------------------------------------------------------------------------------------


class LocalBackend:
    """Everything in this process, one shard after another (the stages on one core): no Ray processes,
    so the least memory (bench/bench_peer.py); also for tests and debugging."""

    name = "local"

    def __enter__(self) -> "LocalBackend":
        tune_allocator()
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def release(self) -> None:
        pass

    def map_shards(self, processor: ShardProcessor, shards: list[Shard], stop: Callable[[], bool] = lambda: False,
                   progress: Callable[[str, int], None] | None = None) -> Iterator[tuple[Shard, dict[str, Any]]]:
        if progress is not None:
            processor.on_progress = lambda shard, position: progress(shard.path, position)
        try:
            for shard in shards:
                if stop():
                    return
                with storage.grouped_flush():  # the shard's outputs flushed together (curation.storage)
                    result = processor.process(shard)
                yield shard, result
        finally:
            processor.on_progress = None

    def map(self, fn: Callable[..., Any], items: Iterable[Any]) -> list[Any]:
        return [_grouped(fn)(item) for item in items]

    @property
    def retries(self) -> int:
        return 0


# Every Ray process of ours is a pooled StageWorker actor (below), so the embedded instance keeps no
# other worker processes: Ray would otherwise prestart one per CPU at start-up and keep idle ones.
EMBEDDED_RAY_SYSTEM_CONFIG = {"num_workers_soft_limit": 0, "enable_worker_prestart": False,
                              "prestart_worker_first_driver": False}


class RayBackend:
    """A pool of Ray actors, one per CPU: a pass's shards stream through them (the stages set up once
    per actor), and the aggregate step after it runs its tasks (`map`) on the same actors rather than
    as Ray tasks, whose idle workers (about 0.2 GB each) Ray would keep alive beside the next pass's
    actors. The next pass starts on fresh actors (`map_shards`), leaving the last one's memory behind
    (bench/bench_peer.py)."""

    name = "ray"

    def __init__(self, config: ExecutorConfig) -> None:
        self.config = config
        self._started_ray = False
        self._retries = 0
        self._pool: list[Any] = []  # live actors (started or starting)
        self._ready: set[Any] = set()  # actors known to have started

    def __enter__(self) -> "RayBackend":
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        import ray  # only the Ray backend needs Ray: `executor: local` never imports it

        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
            if self.config.address:
                try:
                    ray.init(address=self.config.address, **kwargs)
                except (ConnectionError, ray.exceptions.AuthenticationError) as exc:
                    raise PipelineError(
                        f"cannot connect to the Ray cluster at {self.config.address}: {str(exc).splitlines()[0][:300]}. "
                        "Is it running, and is this machine one of its nodes? A cluster whose head has a token "
                        "(Ray's token authentication) needs RAY_AUTH_MODE=token and the head's ~/.ray/auth_token "
                        "here too (README: Running on a Ray cluster)") from None
            else:
                # Ray's token authentication guards the embedded instance too (where ~/.ray/auth_token
                # exists), but its start-up warning tells the user of a library nothing to act on.
                logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
                # The embedded default: a local Ray instance started (and stopped) by the library.
                # address="local" starts a fresh one whatever RAY_ADDRESS or an earlier `ray start` on
                # this machine names: only --address (executor.address) joins an existing cluster.
                # (without Ray's autoscaler monitor: one node, nothing to scale; curation.embedded_ray)
                start_embedded(num_cpus=self.config.num_cpus, include_dashboard=self.config.dashboard,
                               object_store_memory=512 * 1024 * 1024, _system_config=EMBEDDED_RAY_SYSTEM_CONFIG, **kwargs)
                self._started_ray = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        if self._started_ray:
            import ray  # only the Ray backend needs Ray: `executor: local` never imports it

            ray.shutdown()

    def release(self) -> None:
        """Stop the pooled actors (their memory goes back): before work on the driver that needs it."""
        import ray  # only the Ray backend needs Ray: `executor: local` never imports it

        for actor in self._pool:
            ray.kill(actor, no_restart=True)
        self._pool, self._ready = [], set()

    @property
    def retries(self) -> int:
        return self._retries

    def _worker_count(self, items: int) -> int:
        import ray  # only the Ray backend needs Ray: `executor: local` never imports it

        if self.config.num_workers:
            wanted = self.config.num_workers
        else:
            wanted = max(1, int(ray.cluster_resources().get("CPU", 1)))
        return max(1, min(wanted, items))

    def _new_actor(self) -> Any:
        import ray  # only the Ray backend needs Ray: `executor: local` never imports it

        # Two threads: `progress` answers while `process` runs (the scheduler never sends an actor two
        # shards at once)
        actor = ray.remote(num_cpus=1, max_restarts=0, max_concurrency=2)(StageWorker).remote(
            storage.store_environment())
        self._pool.append(actor)
        return actor

    def _discard(self, actor: Any) -> None:
        import ray  # only the Ray backend needs Ray: `executor: local` never imports it

        ray.kill(actor, no_restart=True)
        if actor in self._pool:
            self._pool.remove(actor)
        self._ready.discard(actor)

    def _workers(self, items: int) -> list[Any]:
        """The pool grown to the work's size: actors already there first."""
        while len(self._pool) < self._worker_count(items):
            self._new_actor()
        return list(self._pool)

    def _schedule(self, items: list[Any], start: Callable[[Any], Any], submit: Callable[[Any, Any], Any],
                  what: Callable[[Any], str], stop: Callable[[], bool] = lambda: False,
                  tick: Callable[[list[Any]], None] | None = None) -> Iterator[tuple[Any, Any]]:
        """Run `submit(actor, item)` for every item on the pool, one item per actor at a time, yielding
        (position of the item, result) as they finish. `start(actor)` prepares an actor first (None: nothing to do);
        items go only to prepared actors, so after a node is lost an actor that cannot be placed waits
        without holding work while the others carry on. An item whose actor died (killed, out of
        memory, node lost) runs again on another one, up to `max_retries` times."""
        import ray  # only the Ray backend needs Ray: `executor: local` never imports it
        from ray.exceptions import RayActorError, WorkerCrashedError  # Ray backend only, as above

        if not items:
            return
        pending = list(reversed(range(len(items))))  # positions; pop() takes them in order
        attempts: dict[int, int] = {}
        idle: list[Any] = []
        running: dict[Any, tuple[Any, int]] = {}
        starting: dict[Any, Any] = {}

        def prepare(actor: Any) -> None:
            ref = start(actor)
            if ref is None and actor in self._ready:
                idle.append(actor)
            else:
                starting[ref if ref is not None else actor.__ray_ready__.remote()] = actor

        def replace() -> None:
            if len(idle) + len(running) + len(starting) < self._worker_count(len(pending) + len(running)):
                prepare(self._new_actor())

        for actor in self._workers(len(items)):
            prepare(actor)
        try:
            while (pending and not stop()) or running:
                while pending and idle and not stop():
                    actor, position = idle.pop(), pending.pop()
                    running[submit(actor, items[position])] = (actor, position)
                timeout = (PROGRESS_EVERY_S if tick else None) if running else self.config.start_timeout_s
                done, _ = ray.wait(list(running) + list(starting), num_returns=1, timeout=timeout)
                if not done and running:  # `tick` was given: report how far the running items got
                    tick([actor for actor, _ in running.values()])
                    continue
                if not done:
                    raise PipelineError(f"no stage worker could start in {timeout:.0f} s: the cluster has no free "
                                        "CPU for one (executor.start_timeout_s)")
                ref = done[0]
                if ref in starting:
                    actor = starting.pop(ref)
                    try:
                        ray.get(ref)
                    except (RayActorError, WorkerCrashedError):
                        self._discard(actor)  # killed while starting: another one
                        replace()
                        continue
                    except ray.exceptions.RayTaskError as exc:  # setup() raised: a config or model error
                        raise PipelineError(f"a stage worker failed to set up: {exc}") from None
                    self._ready.add(actor)
                    idle.append(actor)
                    continue
                actor, position = running.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    # The item's own error, raised in the actor: a user-facing one is re-raised as it
                    # was (its message names the shard), never with Ray's remote traceback around it.
                    cause = getattr(exc, "cause", None)
                    if isinstance(cause, CurationError):
                        raise cause from None
                    raise ShardFailure(f"{what(items[position])}: {type(cause).__name__ if cause else 'error'}: "
                                       f"{cause if cause is not None else exc}") from None
                except (RayActorError, WorkerCrashedError) as exc:
                    # Nothing of the item was committed: it runs again from the start on another actor.
                    attempts[position] = attempts.get(position, 0) + 1
                    self._retries += 1
                    name = what(items[position])
                    if attempts[position] > self.config.max_retries:
                        raise PipelineError(f"{name}: its worker died {attempts[position]} times; last error: {exc}") from None
                    log.warning("worker died on %s (attempt %d), retrying: %s", name, attempts[position], exc)
                    self._discard(actor)
                    pending.append(position)
                    replace()
                    continue
                idle.append(actor)
                yield position, result
        finally:
            # Actors still holding work when the caller stops early are stopped: nothing half-done
            # stays running. The others stay in the pool.
            for actor, _ in running.values():
                self._discard(actor)

    def map_shards(self, processor: ShardProcessor, shards: list[Shard], stop: Callable[[], bool] = lambda: False,
                   progress: Callable[[str, int], None] | None = None) -> Iterator[tuple[Shard, dict[str, Any]]]:
        """Yield (shard, result) as shards finish. Once `stop()` is true no new shard starts, but the
        running ones finish and commit, so a failing run leaves no half-written output behind.
        `progress(path, bytes read)` hears every PROGRESS_EVERY_S how far the running shards got."""
        import ray  # only the Ray backend needs Ray: `executor: local` never imports it
        from ray.exceptions import RayActorError, WorkerCrashedError  # Ray backend only, as above

        # A pass starts on fresh processes: the last pass's (or aggregate's) imports, models and heap
        # high-water mark go with the old ones (about 150 MB an actor at the packing pass after the rule
        # filters, bench/bench_peer.py), for a second of start-up.
        self.release()

        def tick(actors: list[Any]) -> None:
            refs = [actor.progress.remote() for actor in actors]
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=PROGRESS_EVERY_S)
            for ref in ready:
                try:
                    reached = ray.get(ref)
                except (RayActorError, WorkerCrashedError):
                    continue  # the shard's own result will say so
                if reached is not None and progress is not None:
                    progress(*reached)

        for position, result in self._schedule(shards, lambda actor: actor.load.remote(processor),
                                               lambda actor, shard: actor.process.remote(shard), lambda shard: shard.path,
                                               stop, tick if progress is not None else None):
            yield shards[position], result
        # The pass's models go. Only actors that started: one that cannot be placed (its node was lost)
        # would never answer.
        for actor, ref in [(actor, actor.unload.remote()) for actor in self._pool if actor in self._ready]:
            try:
                ray.get(ref)
            except (RayActorError, WorkerCrashedError):
                self._discard(actor)

    def map(self, fn: Callable[..., Any], items: Iterable[Any]) -> list[Any]:
        import ray  # only the Ray backend needs Ray: `executor: local` never imports it
        from ray.exceptions import RayActorError, WorkerCrashedError  # Ray backend only, as above

        items = list(items)
        results: list[Any] = [None] * len(items)
        for position, result in self._schedule(items, lambda actor: None, lambda actor, item: actor.call.remote(fn, item),
                                               lambda item: f"{getattr(fn, '__name__', 'task')}({str(item)[:200]})"):
            results[position] = result
        # The step's memory goes back once on every actor (StageWorker.release_memory), before the next
        # step. Only actors that started: one that cannot be placed would never answer.
        for actor, ref in [(actor, actor.release_memory.remote()) for actor in self._pool if actor in self._ready]:
            try:
                ray.get(ref)
            except (RayActorError, WorkerCrashedError):
                self._discard(actor)
        return results


def _grouped(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` as one task: the data files it commits are flushed to disk together (storage.grouped_flush)."""
    @functools.wraps(fn)
    def run(item: Any) -> Any:
        with storage.grouped_flush():
            return fn(item)

    return run


class StageWorker:
    """The Ray actor: one per CPU for the run. `load` sets a pass's stages up once, then shards stream
    through them; `call` runs an aggregate step's task in the same process."""

    def __init__(self, store_environment: dict[str, str] | None = None) -> None:
        # The driver's store variables (AWS_ENDPOINT_URL, keys...): a worker's environment is the Ray
        # instance's, fixed when it started, and may lack them. Handed as an argument, not a runtime_env,
        # which Ray shows in its dashboard and state API.
        storage.adopt_environment(store_environment or {})
        # One tokenizers (Rayon) thread per actor: an actor holds one CPU, and more threads would only
        # fight the other actors for the same cores. Read when the pool starts, at the first encode.
        os.environ.setdefault("RAYON_NUM_THREADS", "1")
        tune_allocator()
        self.processor: ShardProcessor | None = None

    def load(self, processor: ShardProcessor) -> None:
        self.unload()
        processor.setup()
        self.processor = processor

    def unload(self) -> None:
        self.processor = None
        release_memory()

    def process(self, shard: Shard) -> dict[str, Any]:
        assert self.processor is not None, "load() first"
        with storage.grouped_flush():  # the shard's outputs flushed together (curation.storage)
            return self.processor.process(shard)

    def progress(self) -> tuple[str, int] | None:
        return self.processor.progress() if self.processor is not None else None

    def call(self, fn: Callable[..., Any], item: Any) -> Any:
        return _grouped(fn)(item)

    def release_memory(self) -> None:
        """After an aggregate step's tasks (RayBackend.map): once per step, not per task. A task reuses
        the memory the last one freed, so the peak is about the same; the release itself (a full garbage
        collection and malloc_trim: 80-110 ms in the driver of the same run) after each of the 130 small
        tasks of bench_peer's minhash aggregate made it 5.2 s on Ray against 2.3 s in one process."""
        release_memory()


def make_backend(config: ExecutorConfig) -> LocalBackend | RayBackend:
    return RayBackend(config) if config.kind == "ray" else LocalBackend()


# --- the run --------------------------------------------------------------------------------------


@dataclass
class RunOptions:
    skip_bad_shards: bool = False
    overwrite: bool = False
    progress: bool = True


def _fingerprint(config: PipelineConfig, shards: list[Shard]) -> dict[str, Any]:
    """What the outputs depend on. The executor is left out: it does not change a byte."""
    described = config.to_dict()
    described.pop("executor")
    described["output"].pop("keep_work", None)
    described["shards"] = [[s.path, s.size] for s in shards]
    digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()
    return {"version": FINGERPRINT_VERSION, "sha256": digest}


def _prepare_output(layout: Layout, fingerprint: dict[str, Any], overwrite: bool, inputs: list[str]) -> None:
    """Checks before anything is written: the output folder is not an input, holds nothing curation did
    not write (curation/output_folder.py), and holds this pipeline's outputs or none. The folder may be a
    URI (an object-store prefix): every check is a listing or a read through curation.storage."""
    try:
        check_not_inputs(layout.root, inputs)
        check_writable_here(layout.root, overwrite)
    except OutputFolderError as exc:
        raise PipelineError(str(exc)) from None
    if overwrite:
        removed = remove_run_outputs(layout.root)
        if removed:
            log.info("--overwrite: removed %d files of the earlier run in %s", len(removed), layout.root)
    state = storage.list_files(layout.state)
    if any(e.location == layout.fingerprint for e in state):
        previous = storage.read_json(layout.fingerprint)
        finished = [e for e in state if e.location != layout.fingerprint and e.relative.endswith(".json")]
        if previous != fingerprint and not finished:
            # An earlier run of another config that finished nothing (it failed on its first shards,
            # say): nothing to keep, so the corrected config just starts.
            log.info("%s: the earlier run there finished no shard; starting afresh", layout.root)
            remove_run_outputs(layout.root)
    if storage.exists(layout.fingerprint):
        if previous != fingerprint:  # and the earlier run finished something
            files = storage.list_files(layout.root)
            size = sum(e.size for e in files)
            raise PipelineError(
                f"{layout.root} holds the outputs of a different pipeline or input set ({len(finished)} finished "
                f"step(s) of the earlier run; --overwrite would remove its {len(files):,} files, {size / 1e6:,.1f} MB, "
                "all written by curation). Run with --overwrite to start again, or choose another output.path")
    else:
        if not storage.is_uri(layout.root):
            try:
                os.makedirs(layout.root, exist_ok=True)
            except OSError as exc:
                raise PipelineError(f"cannot create output folder {layout.root}: {exc.strerror}") from None
            if not os.access(layout.root, os.W_OK):
                raise PipelineError(f"output folder {layout.root} is not writable")
        # On a store the first write is the check: it names the location, the endpoint and what to fix.
        write_json_atomic(layout.fingerprint, fingerprint)
    # Temporary files of an interrupted run are never trusted: remove them (on a store none exist:
    # uploads go straight to their final key).
    if not storage.is_uri(layout.root):
        for entry in storage.list_files(layout.root):
            if storage.TMP_NAME.match(entry.relative.rsplit("/", 1)[-1]):
                storage.delete(entry.location)


def _load_marker(path: str) -> ShardStats | None:
    try:
        return ShardStats.from_dict(storage.read_json(path)["stats"])
    except FileNotFoundError:
        return None


def run_pipeline(config: PipelineConfig, options: RunOptions | None = None) -> dict[str, Any]:
    """Run (or resume) a pipeline; returns the stats also written to OUT/stats.json."""
    options = options or RunOptions()
    started = time.perf_counter()
    shards = list_shards(config.input)
    operators = [build_stage(entry) for entry in config.stages]  # bad options fail here, before any work
    stages, named_sinks = split_sinks(operators)
    segments = plan_segments(stages)
    sinks: list[tuple[str, Sink]] = ([(DOCUMENTS, DocumentsSink())] if config.output.documents else []) + named_sinks
    layout = Layout(config.output.path)
    inputs = [s.path for s in shards] + [p for p in config.input.path
                                          if (storage.is_dir(p) if storage.is_uri(p) else os.path.isdir(os.path.expanduser(p)))]
    _prepare_output(layout, _fingerprint(config, shards), options.overwrite, inputs)

    run = RunStats(stage_order=[(stage_key(i, s.name), s.name) for i, s in enumerate(operators)])
    run.shards_total = len(shards)
    bad: dict[int, str] = {}
    backend = make_backend(config.executor)
    state = storage.names_in(layout.state)  # aggregate and finish markers; shard markers are listed per pass
    final_done = len(layout.finished(segments[-1], shards)) == len(shards) and \
        all(storage.basename(layout.aggregate_marker(s.keys_for[0])) in state for s in segments if s.keys_for) and \
        all(storage.basename(layout.finish_marker(key)) in state for key, _ in sinks)
    with backend:
        for segment in segments:
            if final_done:
                break
            finished = layout.finished(segment, shards)
            todo = [s for s in shards if s.index not in bad and s.index not in finished]
            if todo:
                if segment.is_last:
                    # The sinks' finish steps have not seen the shards written now: they run again
                    # (the union schema rewrites only files that differ, so the others keep their bytes).
                    storage.delete(storage.join(layout.state, "one_schema.json"))
                    for key, _ in sinks:
                        storage.delete(layout.finish_marker(key))
                _run_segment(backend, segment, todo, config, layout, bad, options, len(segments), sinks)
            if segment.keys_for:
                _run_aggregate(backend, segment, shards, layout, bad)
        if not final_done:
            for key, sink in sinks:
                _run_finish(backend, key, sink, shards, layout, bad, config.output.compression)
        retries = backend.retries

    for segment in segments:
        for shard in shards:
            if shard.index in bad:
                continue
            shard_stats = _load_marker(layout.marker(segment, shard))
            if shard_stats is None:
                continue  # finished before the intermediates were cleaned up
            run.add_shard(shard_stats, first_segment=segment.is_first, last_segment=segment.is_last)
        if segment.keys_for:
            key = segment.keys_for[0]
            marker = storage.read_json(layout.aggregate_marker(key))
            run.aggregates[key] = marker["result"]
            run.stage(key, segment.keys_for[1].name).wall_s += marker["wall_s"]
    finish_markers = {key: storage.read_json(layout.finish_marker(key)) for key, _ in sinks}
    for key, sink in named_sinks:
        run.aggregates[key] = finish_markers[key]["result"]
        run.stage(key, sink.name).wall_s += finish_markers[key]["wall_s"]
    run.shards_skipped = sum(1 for s in shards if s.index not in bad) if final_done else 0
    run.bad_shards = [{"path": shards[i].path, "error": message} for i, message in sorted(bad.items())]
    run.wall_s = time.perf_counter() - started
    result = run.to_dict()
    result["executor"] = {"kind": backend.name, "worker_retries": retries}
    if DOCUMENTS in finish_markers:
        result["one_schema"] = finish_markers[DOCUMENTS]["result"]
    write_json_atomic(layout.stats, result)
    if not bad and not config.output.keep_work:
        storage.delete_tree(layout.work)  # intermediates are only needed until the last segment is done
    return result


def _run_segment(backend, segment: Segment, todo: list[Shard], config: PipelineConfig, layout: Layout,
                 bad: dict[int, str], options: RunOptions, n_segments: int, sinks: list[tuple[str, Sink]]) -> None:
    processor = ShardProcessor(segment, config.input, layout, config.output.compression, sinks)
    label = f"pass {segment.index + 1}/{n_segments}" if n_segments > 1 else "curation"
    with tqdm(total=sum(s.size for s in todo), unit="B", unit_scale=True, desc=label,
              disable=not options.progress, dynamic_ncols=True) as bar:
        failure: list[str] = []
        done, partial = 0, {}  # bytes of finished shards; bytes read of running ones (by path)

        def show(path: str, position: int) -> None:
            partial[path] = position
            bar.n = done + sum(partial.values())
            bar.refresh()

        for shard, result in backend.map_shards(processor, todo, stop=lambda: bool(failure),
                                                progress=show if options.progress else None):
            partial.pop(shard.path, None)
            done += shard.size
            bar.n = done + sum(partial.values())
            bar.refresh()
            if "error" in result:
                if not options.skip_bad_shards:
                    failure.append(result["error"])  # let the running shards finish, start no more
                    continue
                log.warning("skipping bad shard: %s", result["error"])
                bad[shard.index] = result["error"]
    if failure:
        raise PipelineError(f"bad input shard: {failure[0]} (or run with --skip-bad-shards)")


def _run_aggregate(backend, segment: Segment, shards: list[Shard], layout: Layout, bad: dict[int, str]) -> None:
    key, stage = segment.keys_for
    marker = layout.aggregate_marker(key)
    if storage.exists(marker):
        return
    good = [s for s in shards if s.index not in bad]
    keys = storage.names_in(storage.parent(layout.keys(key, good[0]))) if good else set()
    with_keys = [s for s in good if storage.basename(layout.keys(key, s)) in keys]
    ctx = AggregateContext(layout.global_dir(key), [s.name for s in good],
                           [layout.keys(key, s) for s in with_keys], backend.map,
                           keys_shards=[s.index for s in with_keys])
    started = time.perf_counter()
    result = stage.aggregate(ctx)
    write_json_atomic(marker, {"result": result, "wall_s": time.perf_counter() - started})
    release_memory()  # the driver's share of the aggregate (components, say) before the next pass


def _run_finish(backend, key: str, sink: Sink, shards: list[Shard], layout: Layout, bad: dict[int, str],
                compression: str) -> None:
    """A sink's finish step, once every shard is committed; its result is recorded in a marker, so a
    rerun skips it (unless that rerun commits shards: then the marker was deleted)."""
    marker = layout.finish_marker(key)
    if storage.exists(marker):
        return
    context = layout.sink_context(key, compression)
    started = time.perf_counter()
    result = sink.finish(FinishContext(**vars(context), shards=tuple(s for s in shards if s.index not in bad),
                                       map_fn=backend.map))
    write_json_atomic(marker, {"result": result, "wall_s": time.perf_counter() - started})
    release_memory()
