"""TuneFlow: continue-pretrain an LLM on a security corpus, convert it, evaluate it.

    python flows/tune_flow.py run
    python flows/tune_flow.py --config config configs/default.yaml run --max-steps 300

The flow only wires: each step makes one call into its stage's controller
(`steps.<stage>.stage`), keeps the typed result's parts as plain artifacts and
puts the result on a card. Large files stay in the run's storage; artifacts hold
their references (URI and content hash) and small summaries.
"""

import os

# Metaflow refuses to run without a user name and does not accept "root"; fresh
# machines, containers and CI often have neither USERNAME nor a login user.
if not any(os.environ.get(v, "root") != "root" for v in ("METAFLOW_USER", "SUDO_USER", "USERNAME", "USER")):
    os.environ["METAFLOW_USER"] = "tune"

from metaflow import Config, FlowSpec, Parameter, card, current, parallel, step  # noqa: E402

from flows import cards  # noqa: E402
from flows.compute_mutator import ComputeFromConfig  # noqa: E402
from flows.live_card import LiveStatusCard, LiveTrainCard  # noqa: E402
from flows.run_files import base_model_copy, resumed_checkpoints, run_storage  # noqa: E402
from flows.run_tags import tag_run  # noqa: E402
from steps.config import TuneConfig, parse_config_text  # noqa: E402
from steps.dispatch.decorators import train_tasks  # noqa: E402
from steps.dispatch.job_names import training_job_name  # noqa: E402
from steps.dispatch.targets import convert_on_target, evaluate_on_target, train_on_target  # noqa: E402
from steps.prepare.stage import prepare_decide, prepare_encode, prepare_pack, prepare_read, prepare_stage  # noqa: E402
from steps.project_files import DEFAULT_CONFIG  # noqa: E402
from steps.results import TrainSummary  # noqa: E402
from steps.runtime.launch import Rendezvous, free_port  # noqa: E402
from steps.runtime.storage import StoredDir  # noqa: E402

CARD_TYPE = "blank"
"""Cards hold our components only. Metaflow's default type adds the task's metadata and every artifact's repr, which
the UI shows in its own views, and its last render needs the client to see the task finished, which a metadata
service without the single-artifact route never shows: metaflow-local-service made it an error card (docs/ui.md)."""
LIVE_CARD_INTERVAL_S = 5
"""Metaflow's limit on refreshes of the live cards (train, evaluate): a failure waits it out to show FAILED."""
LIVE_CARD_EVERY_S = 30
"""Seconds between the live cards' refreshes while a stage runs. Each is a process that renders the card: on
2 CPU cores, whose ranks it interrupts, one every 5 s cost training 10% of its throughput, one every 30 s
nothing measurable (bench/live_card_cost.py)."""


@ComputeFromConfig("config")  # compute.<step> → @batch / @kubernetes / @secrets
class TuneFlow(FlowSpec):
    config = Config(
        "config",
        default=str(DEFAULT_CONFIG),
        parser=parse_config_text,
        help="Pipeline config (YAML), validated against steps/config/ and stored with the run.",
    )
    corpus = Parameter("corpus", default="", help="Override data.corpus: a folder, glob, s3:// prefix or 'cwe'.")
    base_model = Parameter(
        "base-model", default="", help="Override model.base_model: a HF model folder, an s3:// prefix or a GGUF file."
    )
    max_steps = Parameter("max-steps", default=0, type=int, help="Override train.max_steps (0 keeps the config's).")

    @property
    def tune_config(self) -> TuneConfig:
        """The `run_config` artifact (the config file with the command line's overrides), typed."""
        return TuneConfig.model_validate(self.run_config)

    @card(type=CARD_TYPE)
    @step
    def start(self):
        overrides = {"data.corpus": self.corpus, "model.base_model": self.base_model}
        overrides["train.max_steps"] = self.max_steps or None
        resolved = TuneConfig.model_validate(self.config.to_dict()).with_overrides(**overrides)
        self.run_config = resolved.model_dump()
        tag_run(resolved)  # model:, corpus:, config: tags, which the Metaflow UI filters runs by
        current.card.extend(cards.config_card(resolved))
        self.prepare_shards = list(range(resolved.compute.prepare.workers))
        # One worker: prepare does everything in one step, without the fan-out's five extra tasks.
        self.prepare_path = "sharded" if len(self.prepare_shards) > 1 else "one_step"
        self.next({"one_step": self.prepare, "sharded": self.prepare_fan_out}, condition="prepare_path")

    @step
    def prepare_fan_out(self):
        # A switch's branch cannot start a foreach itself, so this step does.
        self.next(self.prepare_read, foreach="prepare_shards")

    @step
    def prepare_read(self):
        self.shard = self.input
        self.read = prepare_read(self.tune_config, run_storage(self), self.shard).to_dict()
        self.next(self.prepare_reads)

    @step
    def prepare_reads(self, inputs):
        # Joins only gather (Metaflow: a join cannot start the next foreach); the work is in the steps after.
        self.merge_artifacts(inputs, include=["run_config", "prepare_shards", "prepare_path"])
        self.reads = [i.read for i in sorted(inputs, key=lambda i: i.shard)]
        self.next(self.prepare_decide)

    @step
    def prepare_decide(self):
        decisions, tokenizer = prepare_decide(
            self.tune_config, run_storage(self), list(map(StoredDir.from_dict, self.reads))
        )
        self.decisions, self.tokenizer = decisions.to_dict(), tokenizer.to_dict()
        self.next(self.prepare_encode, foreach="prepare_shards")

    @step
    def prepare_encode(self):
        self.shard = self.input
        refs = map(StoredDir.from_dict, (self.reads[self.shard], self.decisions, self.tokenizer))
        self.encoded = prepare_encode(self.tune_config, run_storage(self), self.shard, *refs).to_dict()
        self.next(self.prepare_gather)

    @step
    def prepare_gather(self, inputs):
        self.merge_artifacts(inputs, include=["run_config", "prepare_shards", "prepare_path", "decisions", "tokenizer"])
        self.encoded = [i.encoded for i in sorted(inputs, key=lambda i: i.shard)]
        self.next(self.prepare)

    @card(type=CARD_TYPE)
    @step
    def prepare(self):
        if self.prepare_path == "sharded":
            encoded = [StoredDir.from_dict(e) for e in self.encoded]
            refs = StoredDir.from_dict(self.decisions), StoredDir.from_dict(self.tokenizer)
            result = prepare_pack(self.tune_config, run_storage(self), *refs, encoded)
        else:
            result = prepare_stage(self.tune_config, run_storage(self))
        self.dataset, self.tokenizer = result.dataset.to_dict(), result.tokenizer.to_dict()
        self.base_model_copy = result.base_model_copy.to_dict() if result.base_model_copy else None
        self.prepare_summary = result.summary.model_dump()
        self.rendezvous_port = free_port()
        current.card.extend(cards.prepare_card(result, workers=len(self.prepare_shards)))
        self.next(self.train, num_parallel=train_tasks(self.tune_config))

    @card(type=CARD_TYPE, refresh_interval=LIVE_CARD_INTERVAL_S)
    @parallel
    @step
    def train(self):
        config = self.tune_config
        live = LiveTrainCard(config.train.max_steps, LIVE_CARD_INTERVAL_S, LIVE_CARD_EVERY_S)
        node = current.parallel
        with live.shown_on(current.card):
            result = train_on_target(
                config,
                run_storage(self),
                StoredDir.from_dict(self.dataset),
                StoredDir.from_dict(self.tokenizer),
                Rendezvous(node.num_nodes, node.node_index, node.main_ip, self.rendezvous_port),
                resume_from=resumed_checkpoints(self),
                on_metrics=live.refresh_with,
                job_name=training_job_name(current.flow_name, current.run_id, current.retry_count),
                base_model_copy=base_model_copy(self),
            )
        if result is not None:  # the node that holds the result: node 0, or the task that ran the SageMaker job
            self.checkpoint, self.train_summary = result.checkpoint.to_dict(), result.summary.model_dump()
            self.train_metrics = [record.model_dump() for record in result.metrics]
            self.training_job = result.job.model_dump() if result.job else None
            live.update(result.metrics)
            current.card.extend(cards.train_card(result))
        self.next(self.convert)

    @card(type=CARD_TYPE)
    @step
    def convert(self, inputs):
        self.base_model_copy = getattr(inputs[0], "base_model_copy", None)  # older runs have none
        self.merge_artifacts(inputs, include=["run_config", "dataset", "tokenizer", "prepare_summary"])
        main = next(i for i in inputs if getattr(i, "checkpoint", None))
        self.checkpoint, self.train_summary, self.train_metrics = (
            main.checkpoint,
            main.train_summary,
            main.train_metrics,
        )
        self.training_job = main.training_job
        checkpoint, tokenizer = StoredDir.from_dict(self.checkpoint), StoredDir.from_dict(self.tokenizer)
        job_name = training_job_name(current.flow_name, current.run_id, current.retry_count, "convert")
        result = convert_on_target(self.tune_config, run_storage(self), checkpoint, tokenizer, job_name)
        self.model, self.conversion = result.model.to_dict(), result.conversion.model_dump()
        self.convert_job = result.job.model_dump() if result.job else None
        current.card.extend(cards.convert_card(result))
        self.next(self.evaluate)

    @card(type=CARD_TYPE, refresh_interval=LIVE_CARD_INTERVAL_S)
    @step
    def evaluate(self):
        model, dataset = StoredDir.from_dict(self.model), StoredDir.from_dict(self.dataset)
        train_summary = TrainSummary.model_validate(self.train_summary)
        job_name = training_job_name(current.flow_name, current.run_id, current.retry_count, "evaluate")
        live = LiveStatusCard("evaluate", LIVE_CARD_INTERVAL_S, LIVE_CARD_EVERY_S)
        with live.shown_on(current.card):
            result = evaluate_on_target(
                self.tune_config,
                run_storage(self),
                model,
                dataset,
                train_summary,
                job_name,
                on_progress=live.show,
                base_model_copy=base_model_copy(self),
            )
        self.evaluation, self.eval_summary = result.evaluation.to_dict(), result.summary.model_dump()
        self.eval_table = [row.model_dump() for row in result.table]
        self.evaluate_job = result.job.model_dump() if result.job else None
        current.card.extend(cards.evaluate_card(result))
        self.next(self.end)

    @card(type=CARD_TYPE)
    @step
    def end(self):
        tag_run(self.tune_config)  # again: `resume` clones start, whose tags went on the run it resumes
        self.references = {
            "dataset": self.dataset,
            "tokenizer": self.tokenizer,
            "checkpoint": self.checkpoint,
            "model": self.model,
            "evaluation": self.evaluation,
        }
        current.card.extend(cards.end_card(self.references, self.eval_summary, self.conversion, self.train_summary))


if __name__ == "__main__":
    TuneFlow()
