"""Every host of a SageMaker job prunes its own /opt/ml/checkpoints (the train loop prunes only on host 0)."""

from __future__ import annotations

from pathlib import Path

from steps.dispatch.host_checkpoints import HostCheckpointPruner, host_pruner, prune_host_checkpoints


def _host_folder(tmp_path: Path, steps: list[int]) -> Path:
    folder = tmp_path / "opt" / "ml" / "checkpoints"
    for step in steps:
        (folder / f"step-{step:07d}").mkdir(parents=True)
        (folder / f"step-{step:07d}" / "zero_pp_rank_1_mp_rank_00_optim_states.pt").write_bytes(b"shard")
    (folder / "notes").mkdir()  # not a checkpoint: left alone
    return folder


def test_a_host_keeps_its_newest_checkpoints_by_step_not_by_name(tmp_path) -> None:
    folder = _host_folder(tmp_path, [3, 30, 6, 12])
    assert prune_host_checkpoints(folder, keep=2) == ["step-0000003", "step-0000006"]
    assert sorted(p.name for p in folder.iterdir()) == ["notes", "step-0000012", "step-0000030"]


def test_while_training_the_newest_may_be_mid_save_so_one_more_is_kept(tmp_path) -> None:
    folder = _host_folder(tmp_path, [3, 6, 9])
    with HostCheckpointPruner(folder, keep=1, interval_s=0.01) as pruner:
        pruner._stop.wait(0.2)  # a few rounds while "training" runs
        assert sorted(p.name for p in folder.glob("step-*")) == ["step-0000006", "step-0000009"]
    assert sorted(p.name for p in folder.glob("step-*")) == ["step-0000009"]  # a clean end keeps `keep`


def test_after_a_failure_the_possibly_half_written_newest_is_not_all_that_is_left(tmp_path) -> None:
    folder = _host_folder(tmp_path, [3, 6, 9])
    try:
        with HostCheckpointPruner(folder, keep=1, interval_s=60):
            raise RuntimeError("torchrun exited with code 1")
    except RuntimeError:
        pass
    assert sorted(p.name for p in folder.glob("step-*")) == ["step-0000006", "step-0000009"]


def test_only_the_hosts_without_the_records_prune_here(tmp_path) -> None:
    """Host 0's checkpoints are pruned by the train loop, which knows which ones are complete; pruning them
    here as well only raced it. Hosts 1..N-1 prune their own."""
    main, other = _host_folder(tmp_path / "host-0", [3, 6, 9]), _host_folder(tmp_path / "host-1", [3, 6, 9])
    with host_pruner(main, keep=1, node_rank=0), host_pruner(other, keep=1, node_rank=1):
        pass
    assert sorted(p.name for p in main.glob("step-*")) == ["step-0000003", "step-0000006", "step-0000009"]
    assert sorted(p.name for p in other.glob("step-*")) == ["step-0000009"]
