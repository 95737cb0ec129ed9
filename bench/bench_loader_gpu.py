"""The loader feeding a real GPU: pinned batches, host-to-device copy on a side stream overlapped with
compute, as a trainer uses `PhaseLoader`. Needs CUDA (`--device cpu` is a dry run of the code paths).

Synthetic packed shards (bench_loader.py's: uint16, seq_len 2048, three sources) read once to warm the
page cache, then one phase. Measured, all in one run:

- `copy_ceiling`: a pinned batch of the loader's shape copied to the GPU over and over (the bus limit).
- `to_gpu`: tokens per second that arrive in GPU memory from `PhaseLoader` (rank 0 of 1) with 0, 1, 2
  and 4 DataLoader workers, pinned and, for 2 workers, pageable.
- `overlap`: a trainer's loop around a synthetic step (embedding lookup of `input_ids` plus a chain of
  bf16 matrix products, calibrated to a given time per step, and a `loss.item()` per step): on one batch
  already on the GPU, then fed by the loader, the next batch fetched while the GPU runs the step and
  copied on a side stream. Interleaved rounds; the ratio of the two step times is what the loader costs
  the trainer (1.0: nothing).
- `ranks8`: eight processes, one per data-parallel rank of 8 (one DataLoader worker each, pinned,
  copying into this one GPU), reading the phase at once: what one 8-GPU host's CPUs give every rank.

    python bench/bench_loader_gpu.py [--mb 1000] [--out bench/results/loader_gpu.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_loader import SEQ_LEN, make_sources  # noqa: E402

from curation.loader import PhaseLoader  # noqa: E402
from curation.manifest import build_manifest  # noqa: E402


def build(tmp: Path, mb: int) -> Path:
    make_sources(tmp / "packed", mb)
    total = sum(p.stat().st_size for p in (tmp / "packed").rglob("*.bin")) // 2
    phases = {"root": "packed", "sources": {s: {"max_epochs": 5} for s in ("web", "wiki", "code")},
              "phases": [{"name": "p1", "tokens": int(total), "seed": 1,
                          "weights": {"web": 0.5, "wiki": 0.3, "code": 0.2}}]}
    (tmp / "phases.yaml").write_text(yaml.safe_dump(phases))
    manifest = tmp / "manifest.json"
    build_manifest(tmp / "phases.yaml", manifest)
    for path in (tmp / "packed").rglob("*.bin"):  # warm the page cache
        path.read_bytes()
    return manifest


def to_device(batch: dict, device: torch.device, stream) -> dict:
    """Issue the batch's copies on `stream` (non-blocking from pinned memory) and return device tensors."""
    context = torch.cuda.stream(stream) if stream is not None else _null()
    with context:
        return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def copy_ceiling(device: torch.device, batch_size: int, seconds: float = 2.0) -> dict:
    host = torch.empty((3, batch_size, SEQ_LEN), dtype=torch.int64).pin_memory() if device.type == "cuda" else \
        torch.empty((3, batch_size, SEQ_LEN), dtype=torch.int64)
    dev = torch.empty_like(host, device=device)
    dev.copy_(host, non_blocking=True)
    sync(device)
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(20):
            dev.copy_(host, non_blocking=True)
        sync(device)
        n += 20
    elapsed = time.perf_counter() - started
    return {"gb_per_s": round(n * host.numel() * 8 / elapsed / 1e9, 2),
            "tokens_per_s": round(n * batch_size * SEQ_LEN / elapsed)}


def loader_to_gpu(manifest: Path, device: torch.device | None, batch_size: int, workers: int, pin: bool,
                  max_batches: int) -> dict:
    """Tokens per second that reach GPU memory (`device` None: batches on the host, no copy)."""
    stream = torch.cuda.Stream(device) if device is not None and device.type == "cuda" else None
    loader = PhaseLoader(manifest, "p1", batch_size=batch_size, num_workers=workers, pin_memory=pin,
                         prefetch_factor=4 if workers else None)
    n = batches = 0
    started = None
    for batch in loader:
        if started is None:  # worker start-up and the first batch apart: the steady rate is what a trainer sees
            started = time.perf_counter()
            continue
        n += (to_device(batch, device, stream) if device is not None else batch)["input_ids"].numel()
        batches += 1
        if batches >= max_batches:
            break
    if device is not None:
        sync(device)
    elapsed = time.perf_counter() - started
    return {"workers": workers, "pinned": pin, "copied": device is not None, "batches": batches, "tokens_per_s": round(n / elapsed)}


class Step:
    """A stand-in for a model's step that consumes the whole batch: embedding lookup of input_ids, `depth`
    bf16 matrix products, a masked sum over labels and position_ids. No backward: its only job is to
    keep the GPU busy for a known time while the loader and the copy engine work beside it."""

    def __init__(self, device: torch.device, width: int, depth: int) -> None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        g = torch.Generator(device="cpu").manual_seed(0)
        self.table = (torch.randn(65536, width, generator=g) * 0.02).to(device, dtype)
        self.weight = (torch.randn(width, width, generator=g) / width ** 0.5).to(device, dtype)
        self.depth = depth

    def __call__(self, batch: dict) -> torch.Tensor:
        x = torch.nn.functional.embedding(batch["input_ids"].reshape(-1), self.table)
        for _ in range(self.depth):
            x = x @ self.weight
        keep = (batch["labels"].reshape(-1) != -100).to(x.dtype)
        return (x[:, 0] * keep).sum() + batch["position_ids"].sum()


def calibrated_step(device: torch.device, batch: dict, target_ms: float, width: int) -> Step:
    probe = Step(device, width, 8)
    probe(batch)
    sync(device)
    started = time.perf_counter()
    for _ in range(5):
        probe(batch)
    sync(device)
    per_product = (time.perf_counter() - started) / 5 / 8
    return Step(device, width, max(1, round(target_ms / 1000 / per_product)))


def train(step: Step, batches, resident: dict | None, device: torch.device, stream, steps: int) -> float:
    """Seconds per step of a trainer's loop: enqueue the step, fetch the next batch on the CPU while the GPU
    runs it, issue its copy on the side stream, then wait for the loss (the per-step `loss.item()` of a
    trainer that logs it). With `resident`, the same loop on one batch already on the GPU and no fetch."""
    pending = resident if resident is not None else to_device(next(batches), device, stream)
    started = time.perf_counter()
    for _ in range(steps):
        if stream is not None and resident is None:  # compute waits for the copy; the allocator learns the use
            torch.cuda.current_stream(device).wait_stream(stream)
            for value in pending.values():
                if isinstance(value, torch.Tensor):
                    value.record_stream(torch.cuda.current_stream(device))
        loss = step(pending)
        if resident is None:
            pending = to_device(next(batches), device, stream)
        loss.item()
    return (time.perf_counter() - started) / steps


def overlap(manifest: Path, device: torch.device, batch_size: int, workers: int, target_ms: float, steps: int,
            width: int, rounds: int = 3) -> dict:
    stream = torch.cuda.Stream(device) if device.type == "cuda" else None
    loader = PhaseLoader(manifest, "p1", batch_size=batch_size, num_workers=workers,
                         pin_memory=device.type == "cuda", prefetch_factor=4 if workers else None)
    batches = iter(loader)
    resident = to_device(next(batches), device, None)
    step = calibrated_step(device, resident, target_ms, width)
    train(step, batches, None, device, stream, 5)  # warm both loops
    train(step, batches, resident, device, stream, 5)
    alone, fed = [], []
    for _ in range(rounds):  # interleaved, so clock changes fall on both alike
        alone.append(train(step, batches, resident, device, stream, steps))
        fed.append(train(step, batches, None, device, stream, steps))
    alone_s, fed_s = float(np.median(alone)), float(np.median(fed))
    tokens = batch_size * SEQ_LEN
    return {"workers": workers, "step_ms_resident": round(alone_s * 1000, 3), "step_ms_fed": round(fed_s * 1000, 3),
            "fed_over_resident": round(fed_s / alone_s, 4), "tokens_per_s_needed": round(tokens / alone_s),
            "depth": step.depth, "rounds": rounds}


def _rank(args: tuple) -> None:
    manifest, rank, world, batch_size, max_batches, device_name, queue = args
    device = torch.device(device_name)
    stream = torch.cuda.Stream(device) if device.type == "cuda" else None
    loader = PhaseLoader(manifest, "p1", rank=rank, world_size=world, batch_size=batch_size, num_workers=1,
                         pin_memory=device.type == "cuda", prefetch_factor=4)
    n = batches = 0
    started = None
    for batch in loader:
        if started is None:
            started = time.perf_counter()
            continue
        n += to_device(batch, device, stream)["input_ids"].numel()
        batches += 1
        if batches >= max_batches:
            break
    sync(device)
    queue.put((rank, n, time.perf_counter() - started))


def ranks8(manifest: Path, device: torch.device, batch_size: int, max_batches: int) -> dict:
    context = mp.get_context("spawn")
    queue = context.Queue()
    procs = [context.Process(target=_rank, args=((manifest, r, 8, batch_size, max_batches, str(device), queue),))
             for r in range(8)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join()
    rates = [n / s for _, n, s in results]
    return {"ranks": 8, "tokens_per_s_per_rank_min": round(min(rates)), "tokens_per_s_per_rank_median":
            round(float(np.median(rates))), "tokens_per_s_all_ranks": round(sum(rates))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=300, help="batches timed per loader measurement")
    parser.add_argument("--steps", type=int, default=100, help="steps timed per overlap measurement")
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "loader_gpu.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    results: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (dry run)",
                     "torch": torch.__version__, "cpus": mp.cpu_count(), "data_mb": args.mb,
                     "batch_size": args.batch_size, "seq_len": SEQ_LEN}
    with tempfile.TemporaryDirectory() as name:
        manifest = build(Path(name), args.mb)
        results["copy_ceiling"] = copy_ceiling(device, args.batch_size)
        print(json.dumps(results), flush=True)
        results["to_gpu"] = [loader_to_gpu(manifest, device, args.batch_size, w, device.type == "cuda", args.batches)
                             for w in (0, 1, 2, 4)]
        results["to_gpu"] += [loader_to_gpu(manifest, device, args.batch_size, w, False, args.batches) for w in (0, 2)]
        results["to_gpu"] += [loader_to_gpu(manifest, None, args.batch_size, w, False, args.batches) for w in (0, 2)]
        print(json.dumps(results["to_gpu"]), flush=True)
        results["overlap"] = [overlap(manifest, device, args.batch_size, w, ms, args.steps, args.width)
                              for ms in (20.0, 5.0, 2.0) for w in (0, 2)]
        print(json.dumps(results["overlap"]), flush=True)
        results["ranks8"] = ranks8(manifest, device, args.batch_size, args.batches)
    print(json.dumps(results, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
