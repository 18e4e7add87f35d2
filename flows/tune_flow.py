"""TuneFlow: continue-pretrain an LLM on a security corpus, instruction-tune it, convert it, evaluate it.

    python flows/tune_flow.py run
    python flows/tune_flow.py --config config configs/default.yaml run --max-steps 300
    python flows/tune_flow.py --config config configs/smollm2_instruct.yaml run

    start → prepare → [train → convert] → [instruct → instruct_convert] → evaluate → end

Continued pretraining is skipped when train.max_steps is 0, instruction tuning when
instruct.instructions is empty (the default); switches choose the path, and the launch_* steps
start the @parallel training tasks (a switch cannot start them itself).

The flow only wires: each step runs one stage's spec (`steps/stages.py`) with the runner,
on the stored folders it names as inputs, keeps the result's fields as artifacts and puts
the result on a card. Large files stay in the run's storage; artifacts hold their
references (URI and content hash) and small summaries.
"""

from metaflow import Config, FlowSpec, Parameter, card, current, parallel, step

from flows import cards
from flows.compute_mutator import ComputeFromConfig
from flows.live_card import LiveStatusCard, LiveTrainCard
from flows.metaflow_user import ensure_metaflow_user
from flows.node_python import run_nodes_with_this_python
from flows.run_tags import tag_run
from flows.step_place import keep, step_place
from steps.config import TuneConfig, parse_config_text
from steps.dispatch.decorators import train_tasks
from steps.dispatch.runner import run_stage
from steps.project_files import DEFAULT_CONFIG
from steps.stages import (
    CONVERT,
    EVALUATE,
    INSTRUCT,
    INSTRUCT_CONVERT,
    PREPARE,
    PREPARE_DECIDE,
    PREPARE_ENCODE,
    PREPARE_PACK,
    PREPARE_READ,
    TRAIN,
)

CARD_TYPE = "blank"
"""Cards hold our components only. Metaflow's default type adds the task's metadata and every artifact's repr, which
the UI shows in its own views, and its last render needs the client to see the task finished, which a metadata
service without the single-artifact route never shows: metaflow-local-service made it an error card (docs/ui.md)."""
LIVE_CARD_INTERVAL_S = 5
"""Metaflow's limit on refreshes of the live cards (train, evaluate): a failure waits it out to show FAILED."""
LIVE_CARD_EVERY_S = 30
"""Seconds between the live cards' refreshes while a stage runs. Each is a process that renders the card, and
on a small machine it takes its cores from the ranks (bench/live_card_cost.py measures what it costs)."""
PREPARED = ["run_config", "dataset", "tokenizer", "base_model", "prepare_summary"]
PREPARED += ["instructions", "instruction_summary"]
"""Artifacts of prepare that joins after it hand on."""
PRETRAINED = ["checkpoint", "train_summary", "train_metrics", "train_job", "model", "conversion", "convert_job"]
"""Artifacts of continued pretraining that instruction tuning's join hands on (when pretraining ran)."""


@ComputeFromConfig("config")  # compute.<step> → @batch / @kubernetes / @secrets
class TuneFlow(FlowSpec):
    config = Config(
        "config",
        default=str(DEFAULT_CONFIG),
        parser=parse_config_text,
        help="Pipeline config (YAML), validated against steps/config/ and stored with the run.",
    )
    corpus = Parameter("corpus", default="", help="Override data.corpus: a folder, glob, s3:// prefix or 'cwe'.")
    # Not `base_model`: that is the artifact of the base model as prepare stored it, an input of train and evaluate.
    base_model_source = Parameter(
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
        overrides = {"data.corpus": self.corpus, "model.base_model": self.base_model_source}
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
        keep(self, run_stage(PREPARE_READ, self.tune_config, step_place(), params={"shard": self.shard}))
        self.next(self.prepare_reads)

    @step
    def prepare_reads(self, inputs):
        # Joins only gather (Metaflow: a join cannot start the next foreach); the work is in the steps after.
        self.merge_artifacts(inputs, include=["run_config", "prepare_shards", "prepare_path"])
        self.reads = [i.read for i in sorted(inputs, key=lambda i: i.shard)]
        self.next(self.prepare_decide)

    @step
    def prepare_decide(self):
        keep(self, run_stage(PREPARE_DECIDE, self.tune_config, step_place(), {"read": self.reads}))
        self.next(self.prepare_encode, foreach="prepare_shards")

    @step
    def prepare_encode(self):
        self.shard = self.input
        inputs = {"read": self.reads[self.shard], "decisions": self.decisions, "tokenizer": self.tokenizer}
        keep(self, run_stage(PREPARE_ENCODE, self.tune_config, step_place(), inputs, {"shard": self.shard}))
        self.next(self.prepare_gather)

    @step
    def prepare_gather(self, inputs):
        shared = ["run_config", "prepare_shards", "prepare_path", "decisions", "tokenizer", "base_model"]
        self.merge_artifacts(inputs, include=shared)
        self.encoded = [i.encoded for i in sorted(inputs, key=lambda i: i.shard)]
        self.next(self.prepare)

    @card(type=CARD_TYPE)
    @step
    def prepare(self):
        if self.prepare_path == "sharded":
            inputs = {"encoded": self.encoded, "decisions": self.decisions}
            inputs |= {"tokenizer": self.tokenizer, "base_model": self.base_model}
            result = run_stage(PREPARE_PACK, self.tune_config, step_place(), inputs)
        else:
            result = run_stage(PREPARE, self.tune_config, step_place())
        keep(self, result)
        current.card.extend(cards.prepare_card(result, workers=len(self.prepare_shards)))
        self.first_training = "train" if self.tune_config.pretrains else "instruct"
        self.next({"train": self.launch_train, "instruct": self.launch_instruct}, condition="first_training")

    @step
    def launch_train(self):
        # A switch's branch cannot start a @parallel step itself, so this step does.
        self.next(self.train, num_parallel=train_tasks(self.tune_config))

    @card(type=CARD_TYPE, refresh_interval=LIVE_CARD_INTERVAL_S)
    @parallel
    @step
    def train(self):
        live = LiveTrainCard(self.tune_config.train.max_steps, LIVE_CARD_INTERVAL_S, LIVE_CARD_EVERY_S)
        inputs = {"dataset": self.dataset, "tokenizer": self.tokenizer, "base_model": self.base_model}
        self.train_node = current.parallel.node_index
        with live.shown_on(current.card):
            place = step_place(current.parallel)
            result = run_stage(TRAIN, self.tune_config, place, inputs, on_progress=live.refresh_with)
        if result is not None:  # the node that holds the result: node 0, or the task that ran the SageMaker job
            keep(self, result)
            live.update(result.train_metrics)
            current.card.extend(cards.train_card(result))
        self.next(self.convert)

    @card(type=CARD_TYPE)
    @step
    def convert(self, inputs):
        self.merge_artifacts(inputs, include=PREPARED)
        node_0 = next(i for i in inputs if i.train_node == 0)
        self.checkpoint, self.train_summary = node_0.checkpoint, node_0.train_summary
        self.train_metrics, self.train_job = node_0.train_metrics, node_0.train_job
        inputs = {"checkpoint": self.checkpoint, "tokenizer": self.tokenizer}
        result = run_stage(CONVERT, self.tune_config, step_place(), inputs)
        keep(self, result)
        current.card.extend(cards.convert_card(result))
        self.next(self.instruct_or_evaluate)

    @step
    def instruct_or_evaluate(self):
        # A join (convert) cannot be a switch itself, so this step is.
        self.after_pretraining = "instruct" if self.tune_config.instruct.enabled else "evaluate"
        self.next({"instruct": self.launch_instruct, "evaluate": self.evaluate}, condition="after_pretraining")

    @step
    def launch_instruct(self):
        self.next(self.instruct, num_parallel=train_tasks(self.tune_config, "instruct"))

    @card(type=CARD_TYPE, refresh_interval=LIVE_CARD_INTERVAL_S)
    @parallel
    @step
    def instruct(self):
        config = self.tune_config
        live = LiveTrainCard(config.instruct.max_steps, LIVE_CARD_INTERVAL_S, LIVE_CARD_EVERY_S, "instruct")
        inputs = {"instructions": self.instructions, "tokenizer": self.tokenizer, "base_model": self.tuning_start}
        self.instruct_node = current.parallel.node_index
        with live.shown_on(current.card):
            place = step_place(current.parallel)
            result = run_stage(INSTRUCT, config, place, inputs, on_progress=live.refresh_with)
        if result is not None:
            keep(self, result)
            live.update(result.instruct_metrics)
            current.card.extend(cards.train_card(result))
        self.next(self.instruct_convert)

    @card(type=CARD_TYPE)
    @step
    def instruct_convert(self, inputs):
        pretrained = TuneConfig.model_validate(inputs[0].run_config).pretrains  # a join reads its inputs' artifacts
        self.merge_artifacts(inputs, include=PREPARED + (PRETRAINED if pretrained else []))
        node_0 = next(i for i in inputs if i.instruct_node == 0)
        self.instruct_checkpoint, self.instruct_summary = node_0.instruct_checkpoint, node_0.instruct_summary
        self.instruct_metrics, self.instruct_job = node_0.instruct_metrics, node_0.instruct_job
        inputs = {"checkpoint": self.instruct_checkpoint, "tokenizer": self.tokenizer, "base_model": self.tuning_start}
        result = run_stage(INSTRUCT_CONVERT, self.tune_config, step_place(), inputs)
        keep(self, result)
        current.card.extend(cards.convert_card(result))
        self.next(self.evaluate)

    @card(type=CARD_TYPE, refresh_interval=LIVE_CARD_INTERVAL_S)
    @step
    def evaluate(self):
        config = self.tune_config
        live = LiveStatusCard("evaluate", LIVE_CARD_INTERVAL_S, LIVE_CARD_EVERY_S)
        inputs = {"dataset": self.dataset, "base_model": self.base_model, "model": self.final_model}
        if config.instruct.enabled:
            inputs |= {"instructions": self.instructions, "pretrained_model": self.model if config.pretrains else None}
        with live.shown_on(current.card):
            result = run_stage(EVALUATE, config, step_place(), inputs, on_progress=live.show)
        keep(self, result)
        current.card.extend(cards.evaluate_card(result))
        self.next(self.end)

    @card(type=CARD_TYPE)
    @step
    def end(self):
        tag_run(self.tune_config)  # again: `resume` clones start, whose tags went on the run it resumes
        stored = {"dataset": self.dataset, "tokenizer": self.tokenizer, "base_model": self.base_model}
        if self.tune_config.pretrains:
            stored |= {"checkpoint": self.checkpoint, "model": self.model}
        if self.tune_config.instruct.enabled:
            stored |= {"instructions": self.instructions, "instruct_checkpoint": self.instruct_checkpoint}
            stored["instructed_model"] = self.instructed_model
        stored["evaluation"] = self.evaluation
        self.references = {name: ref for name, ref in stored.items() if ref is not None}
        pretrained = (self.conversion, self.train_summary) if self.tune_config.pretrains else (None, None)
        instructed = (self.instruct_summary, self.instruct_conversion) if self.tune_config.instruct.enabled else None
        current.card.extend(cards.end_card(self.references, self.eval_summary, *pretrained, instructed))

    @property
    def tuning_start(self):
        """What instruction tuning starts from (and a LoRA run's adapters go on): the continued-pretrained model,
        or the base model when pretraining was skipped."""
        return self.model if self.tune_config.pretrains else self.base_model

    @property
    def final_model(self):
        """The model the run ends with: instruction-tuned when it was, else continued-pretrained."""
        return self.instructed_model if self.tune_config.instruct.enabled else self.model


if __name__ == "__main__":
    ensure_metaflow_user()
    run_nodes_with_this_python()
    TuneFlow()
