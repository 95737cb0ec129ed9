"""Built-in stages, one operator per module (installed as `curation.stages`).

Importing this package registers them; `curation stages` lists them with their options.
"""

from curation.stages import exact_dedup, length_filter, noop  # noqa: F401  (registration)
