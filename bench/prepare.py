"""Benchmark: the whole prepare stage against the raw batch-encode ceiling, on the CWE catalogue at 1x and 4x.

    python bench/prepare.py [--repeats 2]

(a) ceiling: the tokenizer that prepare trained, batch-encoding the already extracted
    and cleaned text (the Rust encoder on every core), nothing else.
(b) prepare: `run_prepare` from the raw XML files to Arrow shards (read, clean, redact,
    dedupe, train the tokenizer on its sample, encode, pack, write), in a fresh process per run.
Both are timed as wall time (the targets) and as CPU seconds of all processes and threads
involved, which stays meaningful when other work shares the machine (the load average at
start and end is printed too). Peak memory is the largest sum of proportional set sizes (PSS, so pages shared by
forked workers count once) over the prepare process and its workers, sampled every 20 ms in one more run of each
size that is not timed (sampling slows what it watches); datatrove's likewise.

The 4x corpus is the catalogue plus three copies whose text has its letters rotated
(a->b, a->c, a->d): the same XML structure, document count and length distribution,
word-frequency shape and tokens per character as the original, but distinct text, so
neither the exact nor the near-duplicate filter removes the copies (copies with a few
edits would be removed as near duplicates, and the 4x run would do 1x of the work).
(c) datatrove: Hugging Face datatrove's closest equivalent pipeline (`bench/datatrove_peer.py`: read,
    filter, MinHash near-dedupe, tokenize with prepare's tokenizer), one task per core, in a fresh process.
Prints one JSON line with figures and ratios (`seconds` has ceiling, ours and datatrove's at 1x and 4x).
Targets: (b)/(a) <= 2 on the 4x corpus; (b) < (c); time(4x)/time(1x) <= 4.4; peak(4x)/peak(1x) <= 1.2.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import string
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import psutil

from steps.config import DataConfig, load_config
from steps.formats.cwe_catalogue import bundled_catalogue_path
from steps.formats.tokenizer_folder import load_tokenizer
from steps.prepare.documents import iter_documents
from steps.prepare.pipeline import run_prepare
from steps.prepare.report import CorpusReport
from steps.project_files import DEFAULT_CONFIG


def _rotated_catalogue(source: Path, target: Path, shift: int) -> None:
    lower, upper = string.ascii_lowercase, string.ascii_uppercase
    table = str.maketrans(lower + upper, lower[shift:] + lower[:shift] + upper[shift:] + upper[:shift])
    ET.register_namespace("", "http://cwe.mitre.org/cwe-7")
    tree = ET.parse(source)
    for element in tree.iter():
        element.text = element.text.translate(table) if element.text else element.text
        element.tail = element.tail.translate(table) if element.tail else element.tail
        if "Name" in element.attrib:
            element.set("Name", element.get("Name").translate(table))
    tree.write(target, encoding="utf-8", xml_declaration=True)


def build_corpora(root: Path) -> dict[str, Path]:
    catalogue = bundled_catalogue_path()
    one, four = root / "1x", root / "4x"
    one.mkdir()
    four.mkdir()
    shutil.copy(catalogue, one / catalogue.name)
    shutil.copy(catalogue, four / catalogue.name)
    for shift in (1, 2, 3):
        _rotated_catalogue(catalogue, four / f"rotated-{shift}-{catalogue.name}", shift)
    return {"1x": one, "4x": four}


def _tree_pss(process: psutil.Process) -> int:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def _run_child(command: list[str], sample_memory: bool) -> tuple[dict, float]:
    """Run `command` in a fresh process; its last stdout line (JSON), its CPU seconds and, with `sample_memory`,
    the peak PSS of its tree (`peak_pss_mb`).

    Memory is sampled only in runs that are not timed: reading every process's smaps every 20 ms (about 0.8 ms
    a process) slowed prepare on 2 cores by a fifth.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    process = psutil.Process(child.pid)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                peak = max(peak, _tree_pss(process))
            except psutil.NoSuchProcess:
                return
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    if sample_memory:
        sampler.start()
    stdout, _ = child.communicate()
    done.set()
    if sample_memory:
        sampler.join()
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command[1:3])} failed (exit {child.returncode})")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = json.loads(stdout.strip().splitlines()[-1])
    if sample_memory:
        result["peak_pss_mb"] = round(peak / 2**20, 1)
    return result, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def run_prepare_child(data: DataConfig, out: Path, sample_memory: bool = False) -> dict:
    """One prepare in a fresh process; its wall time (inside the process), or the peak PSS of its tree."""
    config = out.with_suffix(".json")
    config.write_text(data.model_dump_json())
    result, cpu = _run_child([sys.executable, __file__, "--child", str(config), str(out)], sample_memory)
    # The child's CPU time includes its workers (it waits for them); it also includes imports, which the
    # wall time `prepare_s` leaves out, so subtract the child's own import time measured the same way.
    result["prepare_cpu_s"] = round(cpu - result.pop("setup_cpu_s"), 3)
    return result


def run_datatrove_child(corpus: Path, tokenizer_dir: Path, work: Path, sample_memory: bool = False) -> dict:
    """datatrove's closest equivalent pipeline (`bench/datatrove_peer.py`), one task per core, in a fresh process."""
    peer = Path(__file__).with_name("datatrove_peer.py")
    workers = str(psutil.cpu_count())
    result, _ = _run_child(
        [sys.executable, str(peer), str(corpus), str(tokenizer_dir / "tokenizer.json"), str(work), workers],
        sample_memory,
    )
    return result


def child_main(config_path: str, out: str) -> None:
    data = DataConfig.model_validate_json(Path(config_path).read_text())
    setup_cpu = time.process_time()
    started = time.perf_counter()
    summary = run_prepare(data, out)
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "prepare_s": round(seconds, 3),
                "setup_cpu_s": setup_cpu,
                "phases_s": summary.timings_s,
                "documents": summary.report.kept_documents,
                "tokens": summary.tokens.train + summary.tokens.validation,
                "near_duplicates": summary.report.duplicates.near,
            }
        )
    )


def encode_ceiling(data: DataConfig, tokenizer_dir: Path, repeats: int) -> tuple[float, float, int]:
    """Best wall and CPU time of the trained tokenizer's batch encode over the cleaned text, held in memory."""
    texts = [doc.text for doc in iter_documents(data, CorpusReport())]
    backend = load_tokenizer(tokenizer_dir).backend_tokenizer
    best = best_cpu = float("inf")
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        encodings = backend.encode_batch_fast(texts, add_special_tokens=False)
        best = min(best, time.perf_counter() - started)
        best_cpu = min(best_cpu, time.process_time() - started_cpu)  # all of this process's threads
    return best, best_cpu, sum(len(e.ids) for e in encodings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2, help="runs per size; the fastest counts")
    args = parser.parse_args()
    base = load_config(DEFAULT_CONFIG).data
    figures: dict[str, dict] = {}
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as scratch:
        corpora = build_corpora(Path(scratch))
        for size, folder in corpora.items():
            data = base.model_copy(update={"corpus": str(folder)})
            runs = [run_prepare_child(data, Path(scratch) / f"out-{size}-{i}") for i in range(args.repeats)]
            best = min(runs, key=lambda r: r["prepare_s"])
            best["prepare_cpu_s"] = min(r["prepare_cpu_s"] for r in runs)
            memory = run_prepare_child(data, Path(scratch) / f"out-{size}-memory", sample_memory=True)
            ceiling_s, ceiling_cpu_s, ceiling_tokens = encode_ceiling(
                data, Path(scratch) / f"out-{size}-0" / "tokenizer", 3
            )
            tokenizer = Path(scratch) / f"out-{size}-0" / "tokenizer"
            peer = run_datatrove_child(folder, tokenizer, Path(scratch) / f"dt-{size}")
            peer_memory = run_datatrove_child(folder, tokenizer, Path(scratch) / f"dt-{size}-memory", True)
            figures[size] = {
                **best,
                "datatrove_s": peer["datatrove_s"],
                "datatrove_documents": peer["documents"],
                "datatrove_tokens": peer["tokens"],
                "datatrove_peak_pss_mb": peer_memory["peak_pss_mb"],
                "prepare_over_datatrove": round(best["prepare_s"] / peer["datatrove_s"], 2),
                "peak_pss_mb": memory["peak_pss_mb"],
                "corpus_bytes": sum(p.stat().st_size for p in folder.iterdir()),
                "encode_ceiling_s": round(ceiling_s, 3),
                "encode_ceiling_cpu_s": round(ceiling_cpu_s, 3),
                "encode_ceiling_tokens": ceiling_tokens,
                "prepare_over_ceiling": round(best["prepare_s"] / ceiling_s, 2),
                "prepare_over_ceiling_cpu": round(best["prepare_cpu_s"] / ceiling_cpu_s, 2),
            }
    time_growth = figures["4x"]["prepare_s"] / figures["1x"]["prepare_s"]
    cpu_growth = figures["4x"]["prepare_cpu_s"] / figures["1x"]["prepare_cpu_s"]
    memory_growth = figures["4x"]["peak_pss_mb"] / figures["1x"]["peak_pss_mb"]
    print(
        json.dumps(
            {
                "bench": "prepare",
                "corpus": "cwe catalogue (1x) and with 3 letter-rotated copies (4x)",
                "cores": psutil.cpu_count(),
                "load_average_start_end": [round(load_at_start, 2), round(os.getloadavg()[0], 2)],
                "sizes": figures,
                "ratios": {
                    "prepare_over_ceiling_1x": figures["1x"]["prepare_over_ceiling"],
                    "prepare_over_ceiling_4x": figures["4x"]["prepare_over_ceiling"],
                    "time_4x_over_1x": round(time_growth, 2),
                    "prepare_over_ceiling_cpu_1x": figures["1x"]["prepare_over_ceiling_cpu"],
                    "prepare_over_ceiling_cpu_4x": figures["4x"]["prepare_over_ceiling_cpu"],
                    "cpu_time_4x_over_1x": round(cpu_growth, 2),
                    "peak_memory_4x_over_1x": round(memory_growth, 2),
                    "prepare_over_datatrove_1x": figures["1x"]["prepare_over_datatrove"],
                    "prepare_over_datatrove_4x": figures["4x"]["prepare_over_datatrove"],
                },
                "seconds": {
                    size: {k: figures[size][k] for k in ("encode_ceiling_s", "prepare_s", "datatrove_s")}
                    for size in figures
                },
                "targets": {
                    "prepare_over_ceiling_4x": 2.0,
                    "prepare_over_datatrove": 1.0,
                    "time_4x_over_1x": 4.4,
                    "peak_memory_4x_over_1x": 1.2,
                },
            }
        )
    )


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child_main(sys.argv[2], sys.argv[3])
    else:
        main()
