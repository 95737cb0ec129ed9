"""Tokenizer training, encoding and packing (installed as `curation.tokenizer`).

`sample`: language-balanced streaming sample of curated shards; `train`: byte-level BPE with HF
`tokenizers` (65,536 ids, uint16); `evaluate`: bytes per token per group against a plain
ByteLevelBPETokenizer. Packing: not built yet (see the open issues).
"""
