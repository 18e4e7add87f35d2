"""Corpus shards for prepare's workers: the corpus's sources (files and zip members) split into N balanced shards.

A *unit* is one source in corpus order; a shard is a list of (unit, stripe, stripes) parts. Units are
given to shards largest first, each to the shard with the fewest bytes so far, so shards are balanced
by bytes whatever the order of sizes. A unit larger than a shard's fair share (the CWE catalogue is one
5 MB file) is cut into stripes: every stripe reads the whole file but keeps only the documents whose
number in the file leaves its stripe as remainder, so cleaning, redaction and signatures (the costly
part) are shared out while each document still has one position in the corpus: (unit, number in unit).
Everything downstream merges shards in that order, which is what makes a sharded prepare decide exactly
as one process does.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from steps.config import DataConfig
from steps.prepare.archives import archive_entries
from steps.prepare.corpus import LINK_REASON, archive_limits, corpus_sources, file_name, strict_error
from steps.prepare.plan_file import PLAN_FILE
from steps.prepare.read_guard import SkipFile
from steps.prepare.source_names import safe_name, unique_names

Sources = tuple[Path, list[Path], list[Path]]
"""The corpus root, its files and the links not followed (`steps.prepare.corpus.corpus_sources`)."""


@dataclass(frozen=True)
class Unit:
    """One source of the corpus: a file, or one member of a zip archive (`member` is its index in the archive)."""

    name: str
    """The name reports and document ids use: path below the corpus root, `archive.zip!member` in a zip; made
    safe (no surrogate, no secret) and unique (`steps.prepare.source_names`)."""
    path: str
    """The file, relative to the corpus root where it is below it (the root differs per machine for s3://)."""
    member: int | None
    bytes: int
    skip: str | None = None
    """Why the whole unit is skipped (a broken zip archive), found while planning."""
    nested: list[int] | None = None
    """For a member of a zip inside the zip: its index in each nested archive on the way (`member` is the
    nested archive's index in the outer one)."""

    @property
    def chain(self) -> tuple[int, ...]:
        """The member's index in each archive on the way, outermost first."""
        return (self.member, *(self.nested or ())) if self.member is not None else ()


@dataclass(frozen=True)
class ShardPart:
    unit: int
    stripe: int
    stripes: int


@dataclass
class ShardPlan:
    corpus: str
    units: list[Unit]
    links: list[str]
    """Symbolic links below the corpus folder: skipped (and reported) once, by the join."""
    shards: list[list[ShardPart]] = field(default_factory=list)

    def files_of(self, shard: int) -> list[str]:
        """The names of a shard's sources, for an error that says which files a failed worker read."""
        return [self.units[part.unit].name for part in self.shards[shard]]

    def shard_bytes(self) -> list[int]:
        return [sum(self.units[p.unit].bytes // p.stripes for p in parts) for parts in self.shards]

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ShardPlan:
        raw = json.loads(text)
        return cls(
            corpus=raw["corpus"],
            units=[Unit(**u) for u in raw["units"]],
            links=raw["links"],
            shards=[[ShardPart(**p) for p in parts] for parts in raw["shards"]],
        )

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / PLAN_FILE).write_text(self.to_json())
        return folder / PLAN_FILE


def load_plan(folder: Path) -> ShardPlan:
    return ShardPlan.from_json((Path(folder) / PLAN_FILE).read_text())


def _relative(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def corpus_units(
    data: DataConfig, sources: Sources | None = None, sizes: dict[str, int] | None = None
) -> tuple[list[Unit], list[str]]:
    """The corpus's sources in reading order with their sizes, and the names of the links not followed.

    `sources`: `corpus_sources(data.corpus)` already open (a worker that plans and then reads downloads once).
    `sizes`: the files' sizes by path below the root, when the files are not all there (an object listing's).
    """
    if sources is None:
        with corpus_sources(data.corpus) as opened:
            return corpus_units(data, opened, sizes)
    root, files, links = sources
    link_names = [safe_name(file_name(root, link), data.redact_emails) for link in links]
    if link_names and data.strict:
        raise strict_error(link_names[0], LINK_REASON)
    return _units(root, files, data, sizes), link_names


def _units(root: Path, files: list[Path], data: DataConfig, sizes: dict[str, int] | None) -> list[Unit]:
    units: list[Unit] = []
    for path in files:
        name, relative = safe_name(file_name(root, path), data.redact_emails), _relative(root, path)
        if path.suffix.lower() != ".zip":
            units.append(Unit(name, relative, None, path.stat().st_size if sizes is None else sizes[relative]))
            continue
        try:
            entries = archive_entries(path, name, archive_limits(data))
        except SkipFile as exc:
            if data.strict:
                raise strict_error(name, str(exc)) from None
            units.append(Unit(name, relative, None, 0, skip=str(exc)))
            continue
        for entry in entries:
            if entry.skip is not None and data.strict:
                raise strict_error(safe_name(entry.name, data.redact_emails), entry.skip)
            nested = list(entry.chain[1:]) or None
            member_name = safe_name(entry.name, data.redact_emails)
            units.append(Unit(member_name, relative, entry.chain[0], entry.bytes, entry.skip, nested))
    names = unique_names([unit.name for unit in units])
    return [dataclasses.replace(unit, name=name) for unit, name in zip(units, names, strict=True)]


def plan_shards(
    data: DataConfig, workers: int, sources: Sources | None = None, sizes: dict[str, int] | None = None
) -> ShardPlan:
    """The corpus in `workers` shards balanced by bytes (one shard holding everything when `workers` is 1).
    `sources` and `sizes` as for `corpus_units`."""
    if workers < 1:
        raise ValueError(f"compute.prepare.workers = {workers}: must be at least 1")
    units, links = corpus_units(data, sources, sizes)
    fair = max(sum(u.bytes for u in units) / workers, 1.0)
    pieces = []  # (bytes, unit, stripe, stripes)
    for index, unit in enumerate(units):
        stripes = min(workers, max(1, math.ceil(unit.bytes / fair - 1e-9))) if workers > 1 else 1
        pieces += [(unit.bytes / stripes, index, stripe, stripes) for stripe in range(stripes)]
    shards: list[list[ShardPart]] = [[] for _ in range(workers)]
    load = [0.0] * workers
    used_by_unit: dict[int, set[int]] = {}
    # Largest first to the lightest shard (ties: the lowest-numbered), never two stripes of a unit on one shard.
    for size, index, stripe, stripes in sorted(pieces, key=lambda p: (-p[0], p[1], p[2])):
        taken = used_by_unit.setdefault(index, set())
        target = min((s for s in range(workers) if s not in taken), key=lambda s: (load[s], s))
        taken.add(target)
        shards[target].append(ShardPart(index, stripe, stripes))
        load[target] += size
    for parts in shards:
        parts.sort(key=lambda p: (p.unit, p.stripe))  # each shard reads in corpus order
    return ShardPlan(data.corpus, units, links, shards)
