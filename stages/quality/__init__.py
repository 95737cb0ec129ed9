"""Model-based quality: everything about the KenLM and fastText quality models in one place.

    stage.py          the `quality` (KenLM perplexity, lm_score, buckets) and `quality_classifier` stages
    models.py         training (`curation train-lm`), the models folder's quality.json, file checks, scoring
    lm_text.py        the text normalisation shared by training and scoring (CCNet style)
    native.py         the compiled batch scorer, loaded with ctypes
    kenlm_scorer.cc   its source (scripts/build_kenlm.sh compiles it against the KenLM it builds)
"""

from curation.stages.quality.stage import ClassifierQuality, PerplexityQuality  # noqa: F401  (registration)
