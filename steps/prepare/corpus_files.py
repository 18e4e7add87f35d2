"""The files below a corpus folder, without following symbolic links.

A link in a corpus folder can point anywhere (`~/.aws/credentials`, `/etc`, a folder that links
back to itself); following it would read files the user never put in the corpus. So links, to
files or to folders, are not followed but returned, for the report to name as skipped. The corpus
folder itself may be a link: the user named it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def folder_files(root: Path) -> tuple[list[Path], list[Path]]:
    """Regular files below `root`, and the symbolic links met on the way (not descended into)."""
    files: list[Path] = []
    links: list[Path] = []
    for folder, subfolders, names in os.walk(root, followlinks=False):
        base = Path(folder)
        links.extend(base / name for name in subfolders if (base / name).is_symlink())
        for name in names:
            path = base / name
            if path.is_symlink():
                links.append(path)
            elif path.is_file():
                files.append(path)
    return sorted(files), sorted(links)


def _first_link(root: Path, path: Path) -> Path | None:
    """The first symbolic link on the way from `root` down to `path` (`path` itself included), if any."""
    if not path.is_relative_to(root):
        return path if path.is_symlink() else None
    current = root
    for part in path.relative_to(root).parts:
        current = current / part
        if current.is_symlink():
            return current
    return None


def outside_links(root: Path, matches: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """Glob matches split into regular files reached without a link, and the links they were reached through."""
    files: list[Path] = []
    links: set[Path] = set()
    for path in matches:
        if not path.is_file():  # follows links: what would have been read
            continue
        link = _first_link(root, path)
        if link is not None:
            links.add(link)
        else:
            files.append(path)
    return sorted(files), sorted(links)
