"""The tokenizer side (installed as `curation.tokenizer`): a library over the engine's shard I/O that
no curation stage is needed for (ARCHITECTURE.md).

    sample.py         a language-balanced, streamed sample of curated shards (and its held-out slice)
    counts.py         pre-token counting in Ray tasks, for training in bounded memory
    train.py          byte-level BPE with HF `tokenizers` (65,536 ids, uint16), tokenizer.json and the
                      transformers config files
    evaluate.py       bytes per token per group, against a plain ByteLevelBPETokenizer
    encode.py         batch encoding into flat numpy ids (fastokens behind a parity check, HF tokenizers
                      as the fallback); document text never becomes a control id
    parity_sample.py  the built-in text of that parity check
    packing.py        concat and best-fit packing of token streams into fixed-length sequences
    shards.py         the token-shard format (.bin, .index.parquet, .json with checksums)
    packed_folder.py  the layout of a pack output folder (per-source shards, _tail, pack.json)
    export.py         Megatron-LM's indexed dataset from packed shards
"""
