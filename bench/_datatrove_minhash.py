"""datatrove's four MinHash steps over a folder of Parquet shards, 2 workers (in the bench environment).
Prints the seconds of the four steps and the number of documents kept."""

import json
import sys
import time

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.pipeline.readers import ParquetReader
from datatrove.pipeline.writers import ParquetWriter

def main() -> None:
    input_dir, work, shards = sys.argv[1], sys.argv[2], int(sys.argv[3])
    config = MinhashConfig()  # 5-grams, 14 buckets x 8 hashes
    start = time.perf_counter()
    LocalPipelineExecutor(pipeline=[ParquetReader(input_dir), MinhashDedupSignature(f"{work}/sigs", config=config)],
                          tasks=shards, workers=2, logging_dir=f"{work}/logs/1").run()
    LocalPipelineExecutor(pipeline=[MinhashDedupBuckets(f"{work}/sigs", f"{work}/buckets", config=config)],
                          tasks=config.num_buckets, workers=2, logging_dir=f"{work}/logs/2").run()
    LocalPipelineExecutor(pipeline=[MinhashDedupCluster(f"{work}/buckets", f"{work}/remove", config=config)],
                          tasks=1, workers=1, logging_dir=f"{work}/logs/3").run()
    LocalPipelineExecutor(pipeline=[ParquetReader(input_dir), MinhashDedupFilter(f"{work}/remove"), ParquetWriter(f"{work}/out")],
                          tasks=shards, workers=2, logging_dir=f"{work}/logs/4").run()
    print(json.dumps({"seconds": time.perf_counter() - start}))


# multiprocessing's spawn/forkserver re-imports this module in every worker: guard the entry point.
if __name__ == "__main__":
    main()
