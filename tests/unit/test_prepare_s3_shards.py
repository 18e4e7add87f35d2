"""prepare's foreach workers over an s3:// corpus: each downloads only the files of its own shard (and the zip
archives, whose members the plan lists), and reads them exactly as from a local copy of the corpus."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import boto3
import pytest

from steps.config import DataConfig
from steps.prepare.corpus import CorpusError
from steps.prepare.pipeline import decide_phase
from steps.prepare.shard_plan import PLAN_FILE, load_plan
from steps.prepare.shard_read import plan_and_read_shard
from steps.prepare.shard_rows import ROW_SCHEMA, ROWS_FILE, read_rows
from steps.runtime.storage import open_storage
from steps.runtime.storage.s3 import S3Storage
from tests.support.shard_corpus import write_hidden_duplicates

SMALL = {"min_chars": 40, "vocab_size": 300, "block_size": 32, "num_proc": 1, "prompt_tokens": 8, "eval_prompts": 3}
WORKERS = 3


@pytest.fixture
def corpora(aws_env, tmp_path: Path) -> tuple[DataConfig, DataConfig]:
    """The hidden-duplicates corpus in a local folder and, the same files, under an s3:// prefix."""
    local = tmp_path / "corpus"
    write_hidden_duplicates(local)
    bucket = f"shards-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    storage = open_storage(f"s3://{bucket}/corpus")
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        storage.put_file(path, path.relative_to(local).as_posix())
    return DataConfig(corpus=str(local), **SMALL), DataConfig(corpus=storage.uri() + "/", **SMALL)


def test_each_s3_worker_downloads_only_its_shard(corpora, tmp_path: Path, monkeypatch) -> None:
    local, remote = corpora
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # where the downloads go, to see them gone after
    downloaded: list[str] = []
    download = S3Storage.get_file

    def recorded(storage, name, target):
        downloaded.append(name)
        return download(storage, name, target)

    monkeypatch.setattr(S3Storage, "get_file", recorded)
    for shard in range(WORKERS):
        downloaded.clear()
        plan_and_read_shard(remote, WORKERS, shard, tmp_path / f"s3-{shard}")
        plan_and_read_shard(local, WORKERS, shard, tmp_path / f"local-{shard}")
        plan = load_plan(tmp_path / f"local-{shard}")
        own = {plan.units[part.unit].path for part in plan.shards[shard]}
        archives = {unit.path for unit in plan.units if unit.path.endswith(".zip")}
        assert sorted(downloaded) == sorted(own | archives)
        assert len(own - archives) < len({unit.path for unit in plan.units}) - len(archives)  # a share, not all
        # The same plan (but for the corpus's name) and the same rows as from the local folder.
        assert load_plan(tmp_path / f"s3-{shard}").shards == plan.shards
        assert [u.name for u in load_plan(tmp_path / f"s3-{shard}").units] == [u.name for u in plan.units]
        rows = [
            list(read_rows(tmp_path / f"{where}-{shard}" / ROWS_FILE, ROW_SCHEMA.names)) for where in ("s3", "local")
        ]
        assert rows[0] == rows[1] and rows[0]
    assert not list(temp.iterdir())  # each worker's download is removed once its shard is read


def test_workers_that_planned_differently_fail_the_join(corpora, tmp_path: Path) -> None:
    local, _ = corpora
    reads = [tmp_path / f"read-{shard}" for shard in range(2)]
    plan_and_read_shard(local, 2, 0, reads[0])
    (Path(local.corpus) / "late-arrival.txt").write_text("A report added while the workers read. " * 20)
    plan_and_read_shard(local, 2, 1, reads[1])
    assert (reads[0] / PLAN_FILE).read_bytes() != (reads[1] / PLAN_FILE).read_bytes()
    with pytest.raises(CorpusError, match=r"changed while prepare's workers read it"):
        decide_phase(local, reads, tmp_path / "decisions", tmp_path / "tokenizer")
    assert not (tmp_path / "decisions").exists() and not (tmp_path / "tokenizer").exists()
