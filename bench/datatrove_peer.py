"""The peer in `bench/prepare.py`: Hugging Face datatrove's closest equivalent of prepare, on the same corpus.

    python bench/datatrove_peer.py CORPUS_FOLDER TOKENIZER_JSON WORK_FOLDER WORKERS

Read (the same CWE renderer prepare uses, so both parse the same XML into the same documents), filter
(prepare's minimum length and letter share), MinHash near-dedupe (datatrove's four stages: signatures,
buckets, clusters, filter; word 5-grams with 8 bands of 16 hashes, the banding datasketch picks for
prepare's 0.85 threshold and 128 permutations) and tokenize with prepare's trained tokenizer
(`DocumentTokenizer`, unshuffled). Not done by datatrove: Unicode normalisation and secret redaction
(it has no equivalent), the train/validation split and packing into Arrow blocks. Prints one JSON line:
the seconds from the first stage to the last (imports excluded), documents kept and tokens.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import xxhash
from datatrove.data import Document
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.pipeline.filters import LambdaFilter
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.tokens import DocumentTokenizer
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.hashes import xxhash as datatrove_xxhash
from datatrove.utils.word_tokenizers import WordTokenizer

from steps.config import DataConfig
from steps.prepare.clean import alnum_fraction
from steps.prepare.cwe_documents import cwe_documents
from steps.prepare.tokenizer_training import EOS

# datatrove's default xxhash path hands `str` to xxhash, which xxhash 4 (our pin) refuses: encode first.
datatrove_xxhash.xxhash32 = lambda text: xxhash.xxh32_intdigest(text.encode())
datatrove_xxhash.xxhash64 = lambda text: xxhash.xxh64_intdigest(text.encode())

DEFAULTS = DataConfig()
MINHASH = MinhashConfig(n_grams=5, num_buckets=8, hashes_per_bucket=16, seed=1)


class _Words(WordTokenizer):
    """Words as prepare's near-dedupe sees them (`\\w+`), instead of datatrove's default NLTK/spaCy tokenizer."""

    _WORD = re.compile(r"\w+")

    def word_tokenize(self, text: str) -> list[str]:
        return self._WORD.findall(text)

    def sent_tokenize(self, text: str) -> list[str]:
        return text.split("\n")

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in self._WORD.finditer(text)]


def _reader(corpus: Path):
    files = sorted(corpus.iterdir())

    def read(data, rank: int = 0, world_size: int = 1):
        for path in files[rank::world_size]:
            for key, text in cwe_documents(path):
                yield Document(text=text, id=f"{path.name}#{key}")

    return read


def _keep(document: Document) -> bool:
    text = document.text.strip()
    return len(text) >= DEFAULTS.min_chars and alnum_fraction(text) >= DEFAULTS.min_alnum_fraction


def run(corpus: Path, tokenizer: Path, work: Path, workers: int) -> dict:
    def stage(pipeline, tasks, name, depends=None):
        return LocalPipelineExecutor(
            pipeline=pipeline, tasks=tasks, workers=min(workers, tasks), logging_dir=str(work / "logs" / name),
            depends=depends,
        )  # fmt: skip

    filtered, signatures, buckets, removed = (str(work / name) for name in ("filtered", "sigs", "buckets", "removed"))
    read = stage(
        [
            _reader(corpus),
            LambdaFilter(_keep),
            JsonlWriter(filtered, compression=None),
            MinhashDedupSignature(output_folder=signatures, config=MINHASH, language=_Words()),
        ],
        workers,
        "signatures",
    )
    bucket = stage([MinhashDedupBuckets(signatures, buckets, config=MINHASH)], MINHASH.num_buckets, "buckets", read)
    cluster = stage([MinhashDedupCluster(buckets, removed, config=MINHASH)], 1, "clusters", bucket)
    tokenize = stage(
        [
            JsonlReader(filtered, compression=None),
            MinhashDedupFilter(removed),
            DocumentTokenizer(str(work / "tokens"), str(tokenizer), eos_token=EOS, shuffle_documents=False),
        ],
        workers,
        "tokenize",
        cluster,
    )
    started = time.perf_counter()
    tokenize.run()
    seconds = time.perf_counter() - started
    kept = sum(len(path.read_text().splitlines()) for path in Path(filtered).glob("*.jsonl"))
    removed_count = sum(path.stat().st_size // 4 for path in Path(removed).glob("*.remove"))  # uint32 indices
    tokens = sum(path.stat().st_size // 2 for path in (work / "tokens").glob("*.ds"))  # uint16 token ids
    return {"datatrove_s": round(seconds, 3), "documents": kept - removed_count, "tokens": tokens}


if __name__ == "__main__":
    corpus_arg, tokenizer_arg, work_arg, workers_arg = sys.argv[1:5]
    print(json.dumps(run(Path(corpus_arg), Path(tokenizer_arg), Path(work_arg), int(workers_arg))))
