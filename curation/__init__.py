"""curation: raw multilingual text to trainer-ready token shards.

The core: config (`curation.config`), the stage protocol (`curation.stage`), shard I/O
(`curation.io`), the executor (`curation.executor`), stats and the CLI. Operators live in
`curation.stages`, the tokenizer in `curation.tokenizer`.
"""

from curation.stage import DROP_REASON, ID, TEXT, GlobalStage, Stage, register_stage

__version__ = "0.1.0"
__all__ = ["Stage", "GlobalStage", "register_stage", "TEXT", "ID", "DROP_REASON", "__version__"]
