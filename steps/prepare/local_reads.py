"""prepare's read phase on one machine: the corpus's shards read by parallel processes.

One machine shares its cores out as the flow's foreach shares out machines: the corpus is planned into
shards (`steps.prepare.shard_plan`), and each process reads, cleans, redacts and fingerprints whole shards
on its own. That spreads the XML parsing and rendering too, which one reading process feeding a pool of
cleaners cannot: on two cores the reader alone was the slower half. The join then decides from the shards'
rows exactly as from one shard's, so the dataset is the same bytes whatever the number of shards.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import sys
import time
import traceback
from multiprocessing.connection import Connection, wait
from pathlib import Path

from steps.config import DataConfig
from steps.prepare.console import say
from steps.prepare.corpus import CorpusError, corpus_sources
from steps.prepare.shard_plan import ShardPlan, plan_shards
from steps.prepare.shard_read import files_of_shard, read_shard
from steps.prepare.shard_rows import TIMING_FILE


def read_locally(data: DataConfig, folders: list[Path], processes: int, progress_every_s: float = 10.0) -> ShardPlan:
    """Plan the corpus into `len(folders)` shards and read shard k into `folders[k]` (`plan.json`, `rows.arrow`),
    `processes` at a time. The corpus is opened (an s3:// prefix downloaded) once, here, for all of them."""
    started = time.perf_counter()
    with corpus_sources(data.corpus) as sources:
        plan = plan_shards(data, len(folders), sources)
        for folder in folders:
            plan.save(Path(folder))
        processes = min(processes, len(folders))
        if processes <= 1:  # one reader: its pool of `data.num_proc` cleaners is what runs in parallel
            for shard, folder in enumerate(folders):
                read_shard(data, plan, shard, Path(folder), progress_every_s, root=sources[0])
        else:
            shards = f" ({len(folders)} shards)" if len(folders) != processes else ""
            say(f"reading the corpus in {processes} processes{shards}")
            _read_in_processes(data, plan, folders, processes, sources[0], progress_every_s)
    (Path(folders[0]) / TIMING_FILE).write_text(json.dumps({"read_clean_dedupe": time.perf_counter() - started}))
    return plan


def _read_in_processes(
    data: DataConfig, plan: ShardPlan, folders: list[Path], processes: int, root: Path, progress_every_s: float
) -> None:
    """Shard k in a forked process of its own, `processes` at a time; the first failure stops the others."""
    alone = data.model_copy(update={"num_proc": 1})  # each process cleans its own documents: no pool inside
    context = multiprocessing.get_context("fork")  # the plan, config and imported readers are inherited, not sent
    waiting = list(enumerate(folders))
    running: dict[int, tuple[multiprocessing.Process, Connection]] = {}
    # gc.freeze keeps the children's garbage collector off the inherited objects, whose pages it would copy.
    gc.freeze()
    try:
        while waiting or running:
            while waiting and len(running) < processes:
                shard, folder = waiting.pop(0)
                receive, send = context.Pipe(duplex=False)
                args = (send, alone, plan, shard, Path(folder), progress_every_s, root)
                process = context.Process(target=_read_one, args=args, name=f"prepare-read-{shard}", daemon=True)
                process.start()
                send.close()
                running[shard] = process, receive
            # A message comes before its process ends: either wakes the parent, which fails at the first one.
            ended = wait([handle for process, receive in running.values() for handle in (process.sentinel, receive)])
            for shard, (process, receive) in list(running.items()):
                if process.sentinel in ended or receive in ended:
                    del running[shard]
                    _check(shard, process, receive, plan)
    finally:
        for process, _ in running.values():  # a failure elsewhere: the rest of the work is of no use
            process.kill()
            process.join()
        gc.unfreeze()


_MESSAGE_CHARS = 8192
"""Longest failure message a reading process sends: far below what a pipe holds (64 KiB on Linux), so that its
send never blocks, whatever the parent is doing."""


def _read_one(send: Connection, data: DataConfig, plan: ShardPlan, shard: int, folder: Path, *args) -> None:
    try:
        read_shard(data, plan, shard, folder, *args)
    except BaseException as exc:
        if isinstance(exc, CorpusError):  # ours: written to name the file and the reason, never the input
            message = str(exc)
        else:
            # Anything else: the shard, its files and the type. Not the exception itself: it may not pickle, may
            # pickle to more than the pipe holds (a UnicodeEncodeError carries its whole document, and a child
            # blocked on a full pipe never exits), and its text may quote a document (a secret). The log gets
            # the stack without the message.
            message = f"prepare shard {shard} ({files_of_shard(plan, shard)}): failed ({type(exc).__name__})"
            frames = "".join(traceback.format_tb(exc.__traceback__))
            print(f"{frames}{type(exc).__name__} (message withheld: it may quote the corpus)", file=sys.stderr)
        send.send(message[:_MESSAGE_CHARS])
        raise SystemExit(1) from None


def _check(shard: int, process: multiprocessing.Process, receive: Connection, plan: ShardPlan) -> None:
    process.join()
    try:
        message = receive.recv() if receive.poll() else None
    except EOFError:  # ended without a word: poll() also says "ready" once the child's end is closed
        message = None
    if message is not None:
        raise CorpusError(message)
    if process.exitcode != 0:
        # Killed (the kernel's OOM killer, most likely): nothing of its own says so.
        raise CorpusError(
            f"a prepare reading process died (exit code {process.exitcode}) while reading shard {shard} "
            f"({files_of_shard(plan, shard)}); if the machine ran out of memory, lower data.num_proc "
            "(the processes reading at once)"
        )
