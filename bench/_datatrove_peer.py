"""datatrove doing what `curation` does in bench/bench_peer.py (in the bench environment), 2 workers:
LID (lid.176.ftz, the same model file), Gopher repetition and quality, C4, FineWeb, the four MinHash
steps, then DocumentTokenizer with the same tokenizer.json. Prints the seconds of the whole run."""

import json
import os
import sys
import time

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                        GopherRepetitionFilter, LanguageFilter)
from datatrove.pipeline.readers import ParquetReader
from datatrove.pipeline.tokens import DocumentTokenizer
from datatrove.pipeline.writers import ParquetWriter
from datatrove.utils.lid import FT176LID


class LocalFT176(FT176LID):
    """lid.176 from a local file (no download here): the model curation uses."""

    @property
    def model(self):
        if self._model is None:
            from fasttext.FastText import _FastText

            self._model = _FastText(os.environ["LID_MODEL"])
        return self._model


def language_filter() -> LanguageFilter:
    step = LanguageFilter(label_only=True)  # label, drop nothing: curation's lid stage does the same
    step.model = LocalFT176()
    return step


def main() -> None:
    input_dir, work, shards, tokenizer = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    config = MinhashConfig()
    start = time.perf_counter()
    LocalPipelineExecutor(pipeline=[ParquetReader(input_dir), language_filter(), GopherRepetitionFilter(),
                                    GopherQualityFilter(), C4QualityFilter(), FineWebQualityFilter(),
                                    ParquetWriter(f"{work}/filtered"), MinhashDedupSignature(f"{work}/sigs", config=config)],
                          tasks=shards, workers=2, logging_dir=f"{work}/logs/1").run()
    LocalPipelineExecutor(pipeline=[MinhashDedupBuckets(f"{work}/sigs", f"{work}/buckets", config=config)],
                          tasks=config.num_buckets, workers=2, logging_dir=f"{work}/logs/2").run()
    LocalPipelineExecutor(pipeline=[MinhashDedupCluster(f"{work}/buckets", f"{work}/remove", config=config)],
                          tasks=1, workers=1, logging_dir=f"{work}/logs/3").run()
    LocalPipelineExecutor(pipeline=[ParquetReader(f"{work}/filtered"), MinhashDedupFilter(f"{work}/remove"),
                                    DocumentTokenizer(f"{work}/tokens", tokenizer_name_or_path=tokenizer, eos_token="<|sep|>",
                                                      shuffle_documents=False)],
                          tasks=shards, workers=2, logging_dir=f"{work}/logs/4").run()
    print(json.dumps({"seconds": time.perf_counter() - start}))


if __name__ == "__main__":  # multiprocessing re-imports this module in every worker
    main()
