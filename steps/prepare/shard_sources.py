"""The corpus files one prepare worker needs: all of a local corpus, and only its own shard's of an s3:// one.

Each worker plans the shards from the object listing (keys and sizes), which downloads nothing but the
zip archives (the plan's units are their members, listed from the archive); then it downloads the files of
its own shard. N workers share out the download as they share out the reading, so a corpus larger than one
machine's disk is prepared by many.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from steps.config import DEFAULT_CORPUS, DataConfig
from steps.prepare.corpus import CorpusError, corpus_sources
from steps.prepare.shard_plan import ShardPlan, plan_shards
from steps.runtime.storage import open_storage
from steps.runtime.storage.manifest import checked_name, local_target


@contextmanager
def shard_sources(data: DataConfig, workers: int, shard: int) -> Iterator[tuple[ShardPlan, Path]]:
    """The plan of `workers` shards and a local folder holding (at least) the files of `shard`, for a block.

    A download is removed when the block ends, however it ends: it is raw corpus text, secrets and all.
    """
    storage = None if data.corpus == DEFAULT_CORPUS else open_storage(data.corpus)
    if storage is None or storage.local_path is not None:
        with corpus_sources(data.corpus) as sources:
            yield plan_shards(data, workers, sources), sources[0]
        return
    root = Path(tempfile.mkdtemp(prefix="tune-corpus-"))
    try:
        # Names are kept inside the prefix and inside `root` (a key with `..` is refused before any download).
        sizes = {checked_name(name, storage.root): size for name, size in storage.sizes().items()}
        if not sizes:
            raise CorpusError(f"data.corpus = {data.corpus!r} holds no objects; check the bucket and prefix")
        archives = {name for name in sizes if name.lower().endswith(".zip")}
        for name in sorted(archives):
            storage.get_file(name, local_target(root, name))
        plan = plan_shards(data, workers, (root, sorted(root / name for name in sizes), []), sizes)
        own = {plan.units[part.unit].path for part in plan.shards[shard] if plan.units[part.unit].skip is None}
        for name in sorted(own - archives):
            storage.get_file(name, local_target(root, name))
        yield plan, root
    finally:
        shutil.rmtree(root, ignore_errors=True)
