"""prepare over corpus shards (the flow's foreach workers, run here in turn): the same dataset as one process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from steps.config import ConfigError, DataConfig, TuneConfig
from steps.dispatch.runner import Place, run_stage
from steps.formats.dataset import DATASET_SUMMARY_FILE, REPORT_FILE
from steps.prepare import local_reads
from steps.prepare.corpus import CorpusError
from steps.prepare.pipeline import run_prepare
from steps.prepare.shard_plan import plan_shards
from steps.prepare.shard_read import ShardReadError, read_shard
from steps.runtime.launch import LaunchError
from steps.runtime.storage import open_storage
from steps.stages import PREPARE_READ
from tests.support.shard_corpus import write_hidden_duplicates

SMALL = {"min_chars": 40, "vocab_size": 300, "block_size": 32, "num_proc": 1, "prompt_tokens": 8, "eval_prompts": 3}


def _outputs(out: Path) -> dict:
    """Everything prepare writes that a later stage or a person reads, timings aside."""
    dataset = out / "dataset"
    summary = json.loads((dataset / DATASET_SUMMARY_FILE).read_text())
    summary.pop("timings_s")
    files = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    files.pop(f"dataset/{DATASET_SUMMARY_FILE}")
    for side in ("train", "validation"):  # `datasets` writes a random fingerprint there on every save
        files.pop(f"dataset/{side}/state.json")
    return {"summary": summary, "files": files}


def _assert_same(one: Path, many: Path) -> None:
    expected, got = _outputs(one), _outputs(many)
    assert got["summary"] == expected["summary"]
    assert sorted(got["files"]) == sorted(expected["files"])
    different = [name for name in expected["files"] if got["files"][name] != expected["files"][name]]
    assert not different, f"files that differ between 1 and 4 shards: {different}"


def test_four_shards_prepare_the_cwe_catalogue_byte_for_byte_as_one(prepared: Path, debug_config, tmp_path) -> None:
    plan = plan_shards(debug_config.data, 4)
    # One 5 MB file: each of the 4 workers cleans every 4th weakness of it.
    assert [[(p.unit, p.stripe, p.stripes) for p in parts] for parts in plan.shards] == [
        [(0, s, 4)] for s in (0, 1, 2, 3)
    ]
    run_prepare(debug_config.data, tmp_path / "one", shards=1)  # one reader, feeding its pool of cleaners
    # 4 shards read by this machine's processes (2 at a time in CI), as the flow's 4 workers would read them.
    run_prepare(debug_config.data, tmp_path / "sharded", shards=4)
    _assert_same(tmp_path / "one", tmp_path / "sharded")
    # The default: one shard per core, read in parallel.
    _assert_same(tmp_path / "one", prepared)


def test_a_killed_reading_process_fails_prepare_naming_its_shard(tmp_path: Path, monkeypatch) -> None:
    write_hidden_duplicates(tmp_path / "corpus")
    data = DataConfig(corpus=str(tmp_path / "corpus"), **{**SMALL, "num_proc": 2})
    plan = plan_shards(data, 2)

    def killed_on_shard_1(data, plan, shard, *args):
        if shard == 1:
            os._exit(137)  # what the OOM killer leaves: no exception, no message
        return read_shard(data, plan, shard, *args)

    monkeypatch.setattr(local_reads, "read_shard", killed_on_shard_1)  # the children are forked: they see it
    died = r"died \(exit code 137\) while reading shard 1 \(.*\); .*lower data\.num_proc"
    with pytest.raises(CorpusError, match=died) as failed:
        run_prepare(data, tmp_path / "out")
    assert plan.files_of(1)[0] in str(failed.value)
    assert not (tmp_path / "out" / "dataset").exists()  # nothing half-written published


def test_duplicates_hidden_across_shards_are_found_as_by_one_process(tmp_path: Path) -> None:
    expected_drops = write_hidden_duplicates(tmp_path / "corpus")
    data = DataConfig(corpus=str(tmp_path / "corpus"), **SMALL)
    plan = plan_shards(data, 4)
    shard_of = {plan.units[p.unit].name: k for k, parts in enumerate(plan.shards) for p in parts}
    # The fixture does hide them: duplicates are read by other workers than their originals.
    pairs = [(doc.split("#")[0], reason.rsplit(" of ", 1)[1].split("#")[0]) for doc, reason in expected_drops.items()]
    assert sum(shard_of[copy] != shard_of[first] for copy, first in pairs) >= 3, plan.shards

    one = run_prepare(data, tmp_path / "one", require_prompts=False)
    many = run_prepare(data, tmp_path / "many", require_prompts=False, shards=4)
    _assert_same(tmp_path / "one", tmp_path / "many")

    rows = [json.loads(line) for line in (tmp_path / "many" / "dataset" / REPORT_FILE).read_text().splitlines()]
    drops = {r["doc_id"]: r["reason"] for r in rows if r["action"] == "dropped" and "duplicate" in r["reason"]}
    assert drops == expected_drops
    assert (
        many.report.redactions
        and "AKIAIOSFODNN7EXAMPLE" not in (tmp_path / "many" / "dataset").joinpath(REPORT_FILE).read_text()
    )
    # What the fixture holds, counted by hand: the good corpus's 17 documents, a-original.txt, 12 fillers, leak.md
    # and stream.jsonl's 3 that are not copies (the archive's 3 all are); its 8 bad files and good/table.csv (no
    # column of data.csv_columns) skipped, each named once.
    assert one.report.kept_documents == many.report.kept_documents == 17 + 1 + 12 + 1 + 3
    assert one.report.duplicates.model_dump() == {"exact": 2, "near": 2}
    assert one.report.skipped_file_count == many.report.skipped_file_count == 9
    assert [f.path for f in many.report.skipped_files if not f.path.startswith("bad/")] == ["good/table.csv"]


def test_shards_are_balanced_by_bytes(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    sizes = [9000, 5000, 4000, 3000, 3000, 2000, 2000, 1000, 1000, 500, 500]
    for i, size in enumerate(sizes):
        (corpus / f"doc-{i:02d}.txt").write_text("x" * size)
    plan = plan_shards(DataConfig(corpus=str(corpus)), 3)
    loads = plan.shard_bytes()
    assert sum(loads) == sum(sizes) and max(loads) - min(loads) <= 500
    assert sorted(p.unit for parts in plan.shards for p in parts) == list(range(len(sizes)))
    for parts in plan.shards:  # each worker reads in corpus order
        assert [p.unit for p in parts] == sorted(p.unit for p in parts)


def test_a_failed_shard_names_its_files(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    write_hidden_duplicates(corpus)
    data = DataConfig(corpus=str(corpus), strict=True, **SMALL)
    plan = plan_shards(data, 4)  # strict: a broken zip or a link would fail here already; this corpus has none
    failing = next(k for k, parts in enumerate(plan.shards) if "bad/binary.txt" in plan.files_of(k))
    with pytest.raises(ShardReadError, match=rf"prepare shard {failing} \(.*bad/binary.txt.*\): bad/binary.txt"):
        read_shard(data, plan, failing, tmp_path / "out")


def test_only_prepare_fans_out_over_workers() -> None:
    assert TuneConfig.model_validate({"compute": {"prepare": {"workers": 8}}}).compute.prepare.workers == 8
    with pytest.raises((ConfigError, ValueError), match="compute.train.workers"):
        TuneConfig.model_validate({"compute": {"train": {"workers": 2}}})
    with pytest.raises((ConfigError, ValueError), match="workers"):
        TuneConfig.model_validate({"compute": {"prepare": {"workers": 0}}})


def test_a_failed_foreach_task_fails_naming_its_shards_files(tmp_path: Path) -> None:
    """What the flow's prepare_read task raises (the run fails with it): the shard and its files."""
    write_hidden_duplicates(tmp_path / "corpus")
    config = TuneConfig.model_validate(
        {"data": {"corpus": str(tmp_path / "corpus"), "strict": True, **SMALL}, "compute": {"prepare": {"workers": 4}}}
    )
    plan = plan_shards(config.data, 4)
    failing = next(k for k in range(4) if "bad/binary.txt" in plan.files_of(k))
    with pytest.raises(LaunchError, match=rf"prepare shard {failing} failed; its files: .*bad/binary\.txt") as failed:
        run_stage(PREPARE_READ, config, Place(open_storage(tmp_path / "store")), params={"shard": failing})
    assert not list((tmp_path / "store").rglob("_manifest.json"))  # nothing half-written published
    # What a card or a job's FailureReason may show: the shard and its files, without the child's own words.
    public = failed.value.public
    assert public.startswith(f"prepare shard {failing} failed; its files: ") and "bad/binary.txt" in public
    assert public.endswith("; steps.prepare exited with code 1") and "last lines" not in public
