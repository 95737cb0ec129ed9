"""Built-in stages, one operator per module (installed as `curation.stages`).

Importing this package registers them; `curation stages` lists them with their options.
"""

from curation.stages import (  # noqa: F401  (registration)
    c4,
    decontaminate,
    exact_dedup,
    fineweb,
    gopher_quality,
    gopher_repetition,
    length_filter,
    lid,
    minhash_dedup,
    noop,
    pack,
    paragraph_dedup,
    pii,
    quality,
    tokenize,
)
