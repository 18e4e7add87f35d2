"""Which packed blocks each rank reads at each step: a resumed run reads exactly what an uninterrupted one would."""

from __future__ import annotations

import numpy as np


class BlockOrder:
    """Which blocks each rank reads at each step: a fresh seeded shuffle per epoch.

    The order depends only on (seed, step), so a resumed run reads exactly the
    blocks an uninterrupted one would have read; after a resume on another world
    size it continues at the first block not yet read.
    """

    def __init__(self, num_blocks: int, seed: int, micro_batch: int, world_size: int, accumulation: int) -> None:
        self.num_blocks, self.seed = num_blocks, seed
        self.micro_batch, self.world_size, self.accumulation = micro_batch, world_size, accumulation
        self.global_batch = micro_batch * world_size * accumulation
        self._base_step, self._base_position = 0, 0
        self._epoch, self._perm = -1, np.arange(0)

    def resume_at(self, step: int, blocks_seen: int) -> None:
        """Continue the stream after `blocks_seen` blocks at `step` (a checkpoint from any world size)."""
        self._base_step, self._base_position = step, blocks_seen

    def position(self, step: int) -> int:
        """Blocks of the stream read before `step`."""
        return self._base_position + (step - self._base_step) * self.global_batch

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.num_blocks)
        return self._perm

    def indices(self, step: int, micro: int, rank: int) -> list[int]:
        start = self.position(step) + (micro * self.world_size + rank) * self.micro_batch
        out = []
        for position in range(start, start + self.micro_batch):
            epoch, offset = divmod(position, self.num_blocks)
            out.append(int(self._permutation(epoch)[offset]))
        return out
