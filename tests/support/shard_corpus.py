"""A corpus whose duplicates hide across shards: copies and near copies in other files, formats and archives."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from tests.support.corpus_files import prose, write_bad_files, write_good_corpus


def _near(text: str, word: int) -> str:
    words = text.split()
    words[word] = "zeroday"  # one word in 300 changed: a near duplicate at the default threshold
    return " ".join(words)


def write_hidden_duplicates(root: Path) -> dict[str, str]:
    """Every format, unreadable files, a secret, and duplicates spread so that a 4-way plan parts them.

    Returns the expected drop reason per duplicate document id.
    """
    write_good_corpus(root / "good")
    write_bad_files(root / "bad")
    original, other = prose(700, 300), prose(701, 300)
    (root / "a-original.txt").write_text(original)
    (root / "leak.md").write_text("deploy notes\nAKIAIOSFODNN7EXAMPLE used here\n" + prose(702, 200))
    for i in range(12):  # filler, so that the plan has many sources to balance
        (root / "filler" / f"f{i:02d}.txt").parent.mkdir(exist_ok=True)
        (root / "filler" / f"f{i:02d}.txt").write_text(prose(710 + i, 120 + 40 * i))
    (root / "stream.jsonl").write_text(
        "\n".join(json.dumps({"text": t}) for t in (prose(730, 200), original, prose(731, 200), _near(other, 40)))
    )
    with zipfile.ZipFile(root / "z-archive.zip", "w") as archive:
        archive.writestr("copy.md", original)
        archive.writestr("other.md", other)
        archive.writestr("near.txt", _near(original, 150))
    return {
        "stream.jsonl#1": "exact_duplicate of a-original.txt",
        "z-archive.zip!copy.md": "exact_duplicate of a-original.txt",
        "z-archive.zip!near.txt": "near_duplicate of a-original.txt",
        # stream.jsonl comes before the archive in corpus order: the archive's copy is the duplicate
        "z-archive.zip!other.md": "near_duplicate of stream.jsonl#3",
    }
