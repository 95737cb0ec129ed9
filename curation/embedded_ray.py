"""Starting the embedded Ray instance: the local, one-run instance the Ray executor starts and stops
itself when no `executor.address` is given.

`ray.init(address="local")` starts, beside the GCS, the raylet and its agents, Ray's autoscaler monitor.
An instance of one node that lives for one run has nothing to scale, and the monitor costs the run
(measured on this project's 2-core machine, 2026-11-30, `bench/bench_peer.py` and a bare start of two
actors): 53 MB of memory, about 1.3 CPU-seconds of start-up beside the stages, and 1.1-1.3 s of
`ray.shutdown()` (1.3-1.5 s with it, 0.17-0.44 s without). So the embedded instance starts without it.

Ray has no public switch for this (`ray start --head` has a hidden `--no-monitor`; `ray.init` none), so
Ray's own node start is used with its `start_monitor` step skipped while `ray.init` runs. That step is
Ray's internals, not its API: where the installed Ray has no such step the instance starts as plain
`ray.init` starts it (logged at debug level), and `tests/test_executor.py` checks on the installed Ray
that no monitor runs. The dashboard head, also started with `include_dashboard=False` (81 MB), stays:
without it the dashboard agent logs an error every second for the whole run.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator

log = logging.getLogger(__name__)

SKIPPED_STEP = "start_monitor"


@contextlib.contextmanager
def _monitor_skipped() -> Iterator[bool]:
    """While inside, a Ray node started in this process starts no autoscaler monitor; yields whether
    that could be arranged on the installed Ray."""
    try:
        from ray._private.node import Node  # Ray internals: see the module docstring
    except ImportError:
        Node = None
    original = getattr(Node, SKIPPED_STEP, None) if Node is not None else None
    if not callable(original):
        log.debug("this Ray has no Node.%s: the embedded instance starts with its autoscaler monitor", SKIPPED_STEP)
        yield False
        return
    setattr(Node, SKIPPED_STEP, lambda self: None)
    try:
        yield True
    finally:
        setattr(Node, SKIPPED_STEP, original)


def start_embedded(**init_kwargs: Any) -> None:
    """`ray.init(address="local", **init_kwargs)`, without the autoscaler monitor where the installed
    Ray allows it."""
    import ray  # only the Ray backend needs Ray

    with _monitor_skipped():
        ray.init(address="local", **init_kwargs)
