"""One long word must not make the tokenizer quadratic: words are cut at `MAX_WORD_CHARS` characters before the
BPE model sees them, in training and in every encoding with the saved folder, and ordinary text is untouched."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer

from steps.formats.tokenizer_folder import bound_word_length, load_tokenizer, word_bound_limit
from steps.prepare.tokenizer_training import MAX_WORD_CHARS, load_base_tokenizer, train_bpe_tokenizer
from steps.project_files import REPO_ROOT
from tests.support.smollm2 import needs_smollm2

_rng = random.Random(31)
_WORDS = ["".join(_rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(_rng.randint(2, 9))) for _ in range(300)]
CORPUS = [
    f"Incident {i}: the actor used CWE-{i} (Improper Neutralization) to move laterally; see https://example.org/a/{i}.\n"
    + "    indented = {'key': [1, 2, 3]}  # code\n"
    + " ".join(_rng.choice(_WORDS) for _ in range(150))
    + "\n"
    + "=" * 80
    + "\n"
    for i in range(60)
]
"""Ordinary text: prose, code with indentation, a URL, an 80-character rule."""

LONG_RUNS = {
    "letters": "".join(_rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(20_000)),
    "digits": "".join(_rng.choice("0123456789") for _ in range(20_000)),
    "punctuation": "=-+*" * 5_000,
    "whitespace": " " * 20_000,
    "CJK": "漏洞利用攻击载荷" * 2_500,  # 3 bytes a character
}
"""Runs that the byte-level pre-tokenizer keeps as one word each."""


def _longest_piece(tokenizer, text: str) -> int:
    """Characters of text in the longest piece the tokenizer's model is given."""
    pieces = tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)
    return max(end - start for _, (start, end) in pieces)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("trained")
    train_bpe_tokenizer([*CORPUS, *LONG_RUNS.values()], 400).save_pretrained(str(folder))
    return folder


def test_long_runs_reach_the_model_in_pieces_no_longer_than_the_limit(trained: Path) -> None:
    tokenizer = load_tokenizer(trained)  # as the encode phase, train, convert and evaluate load it
    for name, run in LONG_RUNS.items():
        text = f"before {run} after"
        assert _longest_piece(tokenizer, text) <= MAX_WORD_CHARS + 1, name  # and a leading space
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text, name


ORDINARY = [
    *CORPUS,
    "It's what they'll do: we've seen I'm sure you'd  \t\n\n  x  ",
    "Größe — naïve café, 漏洞利用 (CVE-2024-3094) 12345 ９９ 🙂🙂 ",
    " " * 255 + "word" + "\n" * 256 + "end" + " " * 256,
    "a" * 256 + " " + "7" * 256 + " " + "=" * 256,
]
"""Ordinary text, and runs just as long as the limit: split exactly as the byte-level pre-tokenizer splits them."""


def test_ordinary_text_is_pre_tokenized_and_tokenized_as_without_the_bound() -> None:
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)  # its regex is what BYTE_LEVEL_WORDS copies
    bounded = train_bpe_tokenizer(CORPUS, 400)
    for text in ORDINARY:
        assert bounded.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text) == byte_level.pre_tokenize_str(text)
    whole = train_bpe_tokenizer(CORPUS, 400, max_word_chars=None)
    model = json.loads(bounded.backend_tokenizer.to_str())["model"]
    assert model == json.loads(whole.backend_tokenizer.to_str())["model"]  # the same vocabulary and merges
    assert bounded(ORDINARY)["input_ids"] == whole(ORDINARY)["input_ids"]


_TRAIN_AND_ENCODE = """
import random, sys
from steps.formats.tokenizer_folder import load_tokenizer
from steps.prepare.shard_encode import encode_texts
from steps.prepare.tokenizer_training import train_bpe_tokenizer
rng = random.Random(0)
words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(500)]
corpus = [" ".join(rng.choice(words) for _ in range(100)) for _ in range(50)]
word = "".join(rng.choice(words) for _ in range(200_000))[:1_000_000]  # prose without its spaces: 1 MB, one word
train_bpe_tokenizer([*corpus, word], 500).save_pretrained(sys.argv[1])
ids = encode_texts([*corpus, word], load_tokenizer(sys.argv[1]))
print(len(ids[-1]))
"""


def test_training_and_encoding_a_corpus_with_a_1mb_word_finishes(tmp_path: Path) -> None:
    """A few seconds with the bound; without it training alone took 30 s at 200k characters, ~12 min at 1 MB."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-c", _TRAIN_AND_ENCODE, str(tmp_path / "tokenizer")]
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("training and encoding with one 1 MB word did not finish in 120 s: cost quadratic in the word")
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) > 1_000_000 // MAX_WORD_CHARS  # it was encoded, in many tokens


def _base_folder(folder: Path, tokenizer_class: str) -> Path:
    """A byte-level BPE base model tokenizer without a bound, saved under `tokenizer_class`."""
    train_bpe_tokenizer(CORPUS, 400, max_word_chars=None).save_pretrained(str(folder))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": tokenizer_class}))
    return folder


@pytest.mark.parametrize("tokenizer_class", ["TokenizersBackend", "GPT2Tokenizer"])
def test_a_base_models_tokenizer_gets_the_bound_and_keeps_its_ids(tmp_path: Path, tokenizer_class: str) -> None:
    """GPT2Tokenizer (a Hugging Face SmolLM2 folder's class) rebuilds its pipeline on load: the bound must survive."""
    base = _base_folder(tmp_path / "base", tokenizer_class)
    load_base_tokenizer(base).save_pretrained(str(tmp_path / "prepared"))  # what prepare's decide phase does
    prepared, original = load_tokenizer(tmp_path / "prepared"), load_tokenizer(base)
    assert prepared(CORPUS)["input_ids"] == original(CORPUS)["input_ids"]
    for name, run in LONG_RUNS.items():
        assert _longest_piece(prepared, run) <= MAX_WORD_CHARS + 1, name
        assert prepared.decode(prepared(run)["input_ids"]) == run, name


@pytest.mark.slow
@needs_smollm2
def test_smollm2s_tokenizer_gives_the_same_ids_for_ordinary_text(smollm2: Path, tmp_path: Path) -> None:
    load_base_tokenizer(smollm2).save_pretrained(str(tmp_path / "prepared"))
    prepared, original = load_tokenizer(tmp_path / "prepared"), AutoTokenizer.from_pretrained(smollm2)
    assert prepared(ORDINARY)["input_ids"] == original(ORDINARY)["input_ids"]
    for name, run in LONG_RUNS.items():
        assert _longest_piece(prepared, run) <= MAX_WORD_CHARS + 1, name
        assert _longest_piece(original, run) > MAX_WORD_CHARS + 1, name  # SmolLM2 keeps each run whole


def _pieces(backend: Tokenizer, text: str) -> list[int]:
    return [end - start for _, (start, end) in backend.pre_tokenizer.pre_tokenize_str(text)]


@pytest.mark.parametrize(
    ("pre_tokenizer", "steps"),
    [
        (pre_tokenizers.ByteLevel(add_prefix_space=False), ["Split", "ByteLevel"]),  # its regex bounded
        (pre_tokenizers.ByteLevel(add_prefix_space=True), ["ByteLevel", "Split"]),  # a step after it
        (pre_tokenizers.Metaspace(), ["Metaspace", "Split"]),
        (
            pre_tokenizers.Sequence([pre_tokenizers.Digits(), pre_tokenizers.WhitespaceSplit()]),
            ["Digits", "WhitespaceSplit", "Split"],  # tokenizers flattens a Sequence in a Sequence
        ),
    ],
)
def test_the_bound_is_replaced_not_stacked(pre_tokenizer, steps: list[str]) -> None:
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizer
    text = "short words " + "x" * 1000
    before = _pieces(backend, "short words")
    assert bound_word_length(backend, 512) and bound_word_length(backend, 300)
    state = json.loads(backend.to_str())["pre_tokenizer"]
    assert [step["type"] for step in state["pretokenizers"]] == steps and word_bound_limit(state) == 300
    assert max(_pieces(backend, text)) in (300, 301) and _pieces(backend, "short words") == before  # 301: " xxx…"


def test_a_pre_tokenizer_keeping_the_whole_text_as_one_piece_is_left_alone() -> None:
    """Cutting its pieces would cut ordinary text."""
    backend = Tokenizer(models.BPE())
    for whole_text in (None, pre_tokenizers.Metaspace(split=False)):
        backend.pre_tokenizer = whole_text
        assert not bound_word_length(backend, 256)
        assert json.loads(backend.to_str())["pre_tokenizer"] == (whole_text and json.loads(whole_text.__getstate__()))
