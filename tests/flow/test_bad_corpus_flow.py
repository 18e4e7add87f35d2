"""The whole flow on a hostile corpus (issue 13's bad inputs and issue 31's hostile files, credential formats,
indicators and encodings): it completes, names every skipped file with its reason, no planted secret reaches
the run's storage, the console or a card, every planted indicator reaches the training data as it was, and the
UTF-16 and Windows-1252 files are read as text."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from steps.formats.blocks import load_blocks
from steps.formats.dataset import REPORT_FILE
from steps.formats.tokenizer_folder import load_tokenizer
from steps.runtime.storage import StoredDir, fetch
from tests.support.flow_runs import card_data, client_run, config_file, flow_home, runner
from tests.support.hostile_corpus import LIMITS as ARCHIVE_LIMITS
from tests.support.hostile_corpus import write_hostile_corpus

LIMITS = {"max_file_bytes": 1 << 20, "max_document_bytes": 256 << 10}


def _readable(path: Path) -> str:
    """A stored file as text, gunzipped first when it is gzip (Metaflow stores artifacts that way), a card with its
    content decoded. A file that says it is gzip or a card and cannot be read as one fails the scan: a leak check
    that skips what it could not decode proves nothing about it."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    text = data.decode("utf-8", "replace")
    if path.suffix == ".html" and "__MF_DATA__" in text:
        text += card_data(text)  # a card's content is base64 inside its HTML
    return text


@pytest.mark.slow
def test_every_bad_input_is_skipped_and_named_and_no_secret_leaks(tmp_path: Path, monkeypatch) -> None:
    from metaflow.cards import get_cards

    home = flow_home(tmp_path / "flow")
    bad = write_hostile_corpus(tmp_path / "inputs" / "corpus", **LIMITS)  # outside `home`: only outputs are scanned
    data = {"corpus": str(tmp_path / "inputs" / "corpus"), **LIMITS, **ARCHIVE_LIMITS}
    config = config_file(home, "bad-inputs", data=data)
    monkeypatch.chdir(home)  # the card client looks for .metaflow from the working folder
    with runner(home, config) as flow:
        result = flow.run(max_steps=10)
        console = result.stdout + result.stderr
        assert result.status == "successful", console[-4000:]
        pathspec = result.run.pathspec
    run = client_run(home, pathspec)
    prepare = run["prepare"].task

    dataset = fetch(StoredDir.from_dict(prepare.data.dataset), verify=True)
    rows = [json.loads(line) for line in (dataset / REPORT_FILE).read_text().splitlines()]
    skipped = {r["source"]: r["reason"] for r in rows if r["action"] == "skipped_file"}
    records = {r["doc_id"]: r["reason"] for r in rows if r["action"] == "skipped_record"}
    card = card_data(get_cards(prepare)[0].get())
    for name, fragment in bad.skipped.items():
        assert fragment in skipped.get(name, ""), (name, skipped)
        # The card's table row: the reason (first, so a long path cannot push it off screen), then the file's name.
        assert re.search(r'"[^"]*' + re.escape(fragment) + r'[^"]*",\s*' + re.escape(json.dumps(name)), card), name
    for doc_id, fragment in bad.skipped_records.items():
        assert fragment in records.get(doc_id, ""), (doc_id, records)

    tokenizer = load_tokenizer(fetch(StoredDir.from_dict(prepare.data.tokenizer), verify=True))
    blocks = [load_blocks(dataset / side).reshape(-1).tolist() for side in ("train", "validation")]
    trained_on = [tokenizer.decode(ids) for ids in blocks]
    kept = [i for i in bad.indicators if not any(i in text for text in trained_on)]
    assert not kept, f"planted indicators redacted or lost: {kept}"
    unread = [p for p in bad.read_phrases if not any(p in text for text in trained_on)]
    assert not unread, f"text in other encodings not read: {unread}"
    assert prepare.data.prepare_summary["documents_by_encoding"].get("utf-16", 0) >= 1
    outputs = [console, card, *trained_on]
    # Prepare's foreach steps and the switches' wiring steps (launch_*, instruct_or_evaluate) have no card.
    carded = [step for step in run if not step.id.startswith(("prepare_", "launch_", "instruct_or_"))]
    outputs += [card_data(c.get()) for step in carded for c in get_cards(step.task)]
    outputs += [_readable(p) for p in home.rglob("*") if p.is_file()]
    leaked = [secret for secret in bad.secrets if any(secret in text for text in outputs)]
    assert not leaked, f"planted secrets found in the run's outputs: {leaked}"
