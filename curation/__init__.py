"""curation: raw multilingual text to trainer-ready token shards.

The core: config (`curation.config`), the stage protocol (`curation.stage`), shard I/O
(`curation.io`), the executor (`curation.executor`), stats and the CLI. Operators live in
`curation.stages`, the tokenizer in `curation.tokenizer`.
"""

import os

# Arrow's C++ code (Parquet reading and writing, compute kernels) allocates from the pool that
# ARROW_DEFAULT_MEMORY_POOL names, read once, when pyarrow loads; the default, mimalloc, kept what
# each batch freed: a whole local run of the bench (bench/bench_peer.py, 56 MB) peaked at 455 MB of PSS
# with it and 283 MB with the C heap, no slower (curation.memory). So the C heap, unless the
# environment names a pool; this reaches every process that imports curation before pyarrow (the CLI,
# our Ray workers) and the processes they start.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

from curation.stage import DROP_REASON, ID, TEXT, GlobalStage, Stage, register_stage

__version__ = "0.1.0"
__all__ = ["Stage", "GlobalStage", "register_stage", "TEXT", "ID", "DROP_REASON", "__version__"]
