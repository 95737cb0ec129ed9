"""Runs datatrove's four rule filters over a Parquet file of documents (in the bench environment).

Writes one JSON line per document ({"id", "kept", "reason"}) and prints the seconds spent filtering.
Called by bench/bench_rules.py; run with .venv-bench/bin/python.
"""

import json
import sys
import time

import pyarrow.parquet as pq
from datatrove.data import Document
from datatrove.pipeline.filters import C4QualityFilter, FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter

source, decisions_path = sys.argv[1], sys.argv[2]
table = pq.read_table(source)
docs = [Document(text=t, id=i) for i, t in zip(table.column("id").to_pylist(), table.column("text").to_pylist())]
filters = [("gopher_quality", GopherQualityFilter()), ("gopher_repetition", GopherRepetitionFilter()),
           ("c4", C4QualityFilter()), ("fineweb", FineWebQualityFilter())]
decisions = []
start = time.perf_counter()
for doc in docs:
    verdict = {"id": doc.id, "kept": True, "reason": None}
    for name, f in filters:
        result = f.filter(doc)
        keep, reason = (result, None) if isinstance(result, bool) else result
        if not keep:
            verdict = {"id": doc.id, "kept": False, "reason": f"{name}:{reason}"}
            break
    decisions.append(verdict)
elapsed = time.perf_counter() - start
with open(decisions_path, "w") as handle:
    for d in decisions:
        handle.write(json.dumps(d) + "\n")
print(json.dumps({"seconds": elapsed}))
