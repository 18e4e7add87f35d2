"""Zip archives in a corpus, nested ones included, opened within bounds on what one archive may expand to.

Limits per member (`data.max_file_bytes`) do not bound an archive: a zip can hold a million members, or many
central-directory entries pointing at the same compressed data (Python's `zipfile` reads each of them as a
member of its own: 29 kB read as 1.56 GiB). So, for one archive on disk and everything nested in it:
- its members, all levels together, are at most `data.max_archive_members`, counted from the end record
  before `zipfile` reads (and holds) the member list;
- their declared sizes add up to at most `data.max_archive_bytes` (`zipfile` never reads a member past its
  declared size: the check on the declared sizes bounds what is read);
- no two entries share bytes (the overlap bomb): each entry's data must end before the next one's header;
- an archive inside an archive is read down to `data.max_archive_depth` archives deep, each nested archive
  copied out once (in memory up to 16 MiB, on disk past that) to be opened.
An archive that breaks one of the first three is skipped whole, with the limit named; one nested too deep is
skipped on its own. Members are only ever read, never extracted: a member named `/etc/x` or `../../x` is
just a name.
"""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, NamedTuple

from steps.prepare.read_guard import SkipFile, bounded, error_reason

_LOCAL_HEADER_BYTES = 30  # a local file header's fixed part; its name and extra field come on top
_SPOOL_BYTES = 16 << 20


class ArchiveLimit(SkipFile):
    """The archive as a whole is over a limit: skipped whole, whichever nested archive tripped it."""


@dataclass(frozen=True)
class ArchiveLimits:
    max_bytes: int
    max_members: int
    max_depth: int
    max_member_bytes: int


@dataclass
class _Tally:
    members: int = 0
    bytes: int = 0
    limits: ArchiveLimits = field(default=None)  # type: ignore[assignment]

    def add(self, members: int, size: int) -> None:
        self.members += members
        self.bytes += size
        if self.members > self.limits.max_members:
            raise ArchiveLimit(
                f"archive of {self.members} members, more than data.max_archive_members "
                f"({self.limits.max_members}) (nested archives' members included); raise it to read this archive"
            )
        if self.bytes > self.limits.max_bytes:
            raise ArchiveLimit(
                f"archive whose members expand to more than data.max_archive_bytes ({self.limits.max_bytes}) "
                "(nested archives' members included); raise it to read this archive"
            )


class ArchiveEntry(NamedTuple):
    name: str
    """`outer.zip!member`, `outer.zip!inner.zip!member` for a nested one."""
    chain: tuple[int, ...]
    """The member's index in each archive on the way, outermost first."""
    bytes: int
    skip: str | None = None


def _declared_entries(handle: IO[bytes]) -> int:
    # zipfile reads every central-directory entry into a ZipInfo (~0.5 kB each) when it opens an archive; the
    # end record says how many there are, so a huge count is refused before that. _EndRecData is zipfile's own
    # reader of that record (zip64 included): private, but unchanged since Python 2.
    end = zipfile._EndRecData(handle)  # type: ignore[attr-defined]
    if end is None:
        raise SkipFile("broken zip archive (no end of central directory record)")
    return end[zipfile._ECD_ENTRIES_TOTAL]  # type: ignore[attr-defined]


def _check_overlap(archive: zipfile.ZipFile) -> None:
    entries = sorted((info.header_offset, info.compress_size) for info in archive.infolist() if not info.is_dir())
    for (offset, size), (next_offset, _) in zip(entries, entries[1:], strict=False):
        if offset + _LOCAL_HEADER_BYTES + size > next_offset:
            raise ArchiveLimit("zip archive with overlapping entries (entries sharing data: a zip bomb)")


def checked_zip(handle: IO[bytes] | Path, tally: _Tally) -> zipfile.ZipFile:
    """The archive opened after its member count is checked against what `tally` has left, its entries
    checked for overlap and its members' sizes and count added to `tally`."""
    try:
        with ExitStack() as closing:
            raw = closing.enter_context(open(handle, "rb")) if isinstance(handle, Path) else handle
            if tally.members + _declared_entries(raw) > tally.limits.max_members:
                tally.add(_declared_entries(raw), 0)  # raises, naming the count
            archive = zipfile.ZipFile(handle if isinstance(handle, Path) else raw)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise SkipFile(f"broken zip archive ({type(exc).__name__})") from None
    try:
        _check_overlap(archive)
        files = [info for info in archive.infolist() if not info.is_dir()]
        tally.add(len(files), sum(info.file_size for info in files))
    except BaseException:
        archive.close()
        raise
    return archive


@contextmanager
def nested_zip(archive: zipfile.ZipFile, member: zipfile.ZipInfo, tally: _Tally) -> Iterator[zipfile.ZipFile]:
    """A member that is itself a zip archive, opened from a copy (its deflated stream cannot seek)."""
    if member.flag_bits & 0x1:
        raise SkipFile("encrypted zip member that needs a password")
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as copy:
        limit = tally.limits.max_member_bytes
        with bounded(archive.open(member), limit, f"larger than data.max_file_bytes ({limit} bytes)") as source:
            while chunk := source.read(1 << 20):
                copy.write(chunk)
        copy.seek(0)
        with checked_zip(copy, tally) as inner:
            yield inner


def archive_entries(path: Path, name: str, limits: ArchiveLimits) -> list[ArchiveEntry]:
    """Every file member of the archive at `path`, nested archives opened down to the depth allowed;
    SkipFile (ArchiveLimit) when the archive as a whole breaks a limit."""
    tally = _Tally(limits=limits)
    with checked_zip(path, tally) as archive:
        return list(_entries(archive, name, (), 1, tally))


def _entries(archive: zipfile.ZipFile, name: str, chain: tuple[int, ...], depth: int, tally: _Tally):
    for index, info in enumerate(archive.infolist()):
        if info.is_dir():
            continue
        member, where = f"{name}!{info.filename}", (*chain, index)
        if not info.filename.lower().endswith(".zip"):
            yield ArchiveEntry(member, where, info.file_size)
        elif depth >= tally.limits.max_depth:
            reason = f"archive nested deeper than data.max_archive_depth ({tally.limits.max_depth}); raise it to read"
            yield ArchiveEntry(member, where, 0, reason)
        else:
            try:
                with nested_zip(archive, info, tally) as inner:
                    yield from _entries(inner, member, where, depth + 1, tally)
            except ArchiveLimit:
                raise
            except Exception as exc:  # a damaged nested archive: skipped on its own, named by kind, never quoted
                yield ArchiveEntry(member, where, 0, error_reason(exc))


def reading_tally(limits: ArchiveLimits) -> _Tally:
    """A fresh count for opening nested archives again to read them (planning checked the whole archive)."""
    return _Tally(limits=limits)
