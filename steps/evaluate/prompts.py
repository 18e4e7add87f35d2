"""What evaluate generates for: held-out prompts from prepare plus an optional user JSONL file.

A user file is checked line by line before any model is loaded; a bad line
stops the run with the file, the line number and what is wrong with it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from steps.formats.dataset import PROMPTS_FILE, read_prompts


class EvalDataError(ValueError):
    """A prompt or probe file that cannot be used as it is."""


def read_jsonl(path: Path, required: tuple[str, ...], optional: dict[str, type]) -> list[dict[str, Any]]:
    """Records of a JSONL file with non-empty string fields `required` and typed `optional` ones."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise EvalDataError(f"{path}: cannot read it ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise EvalDataError(f"{path}: not UTF-8 text; save it as UTF-8 JSON lines") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalDataError(f"{where}: not valid JSON ({exc.msg}); each line must be one JSON object") from None
        if not isinstance(record, dict):
            raise EvalDataError(f"{where}: expected a JSON object, got {type(record).__name__}")
        for field in required:
            if not isinstance(record.get(field), str) or not record[field].strip():
                raise EvalDataError(f"{where}: field {field!r} must be a non-empty string, got {record.get(field)!r}")
        for field, kind in optional.items():
            if field in record and not isinstance(record[field], kind):
                raise EvalDataError(f"{where}: field {field!r} must be a {kind.__name__}, got {record[field]!r}")
        unknown = sorted(set(record) - set(required) - set(optional))
        if unknown:
            raise EvalDataError(f"{where}: unknown fields {unknown}; allowed: {[*required, *optional]}")
        records.append(record)
    if not records:
        raise EvalDataError(f"{path}: holds no records")
    return records


def load_prompts(dataset_dir: Path, prompt_file: str | None, tokenizer) -> list[dict[str, Any]]:
    """Held-out prompts (source `heldout`) followed by the user's (source `user`), in file order."""
    prompts = [{"source": "heldout", **row} for row in read_prompts(dataset_dir)]
    if prompt_file:
        for number, record in enumerate(read_jsonl(Path(prompt_file), ("prompt",), {"reference": str})):
            ids = tokenizer(record["prompt"], add_special_tokens=False)["input_ids"]
            prompts.append(
                {
                    "source": "user",
                    "doc_id": f"{Path(prompt_file).name}#{number}",
                    "prompt": record["prompt"],
                    "prompt_ids": ids,
                    "reference": record.get("reference", ""),
                }
            )
    if not prompts:
        raise EvalDataError(f"no prompts: {dataset_dir / PROMPTS_FILE} is empty and evaluate.prompt_file is unset")
    return prompts
