"""Tokenizer training, encoding and packing (installed as `curation.tokenizer`).

Not built yet: see the open issues on BPE training and packing.
"""
