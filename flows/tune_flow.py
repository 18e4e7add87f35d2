"""TuneFlow: continue-pretrain an LLM on a security corpus, convert it, evaluate it.

    python flows/tune_flow.py run
    python flows/tune_flow.py --config config configs/default.yaml run --max-steps 300

The flow only wires: each step makes one call into `steps.stages` and puts the
result on a card. Large files stay in the run's storage; artifacts hold their
references (URI and content hash) and small summaries.
"""

import os
import sys
from pathlib import Path

# The stage code is the `steps` package beside this folder.
REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

# Metaflow refuses to run without a user name and does not accept "root"; fresh
# machines, containers and CI often have neither USERNAME nor a login user.
if not any(os.environ.get(v, "root") != "root" for v in ("METAFLOW_USER", "SUDO_USER", "USERNAME", "USER")):
    os.environ["METAFLOW_USER"] = "tune"

import tune_cards  # noqa: E402
from compute_mutator import ComputeFromConfig  # noqa: E402
from metaflow import Config, FlowSpec, Parameter, card, current, parallel, step  # noqa: E402
from run_files import resumed_checkpoints, run_storage  # noqa: E402

from steps import stages  # noqa: E402
from steps.compute import train_tasks  # noqa: E402
from steps.config import TuneConfig, parse_config_text  # noqa: E402
from steps.launch import Rendezvous, free_port  # noqa: E402
from steps.sagemaker_job import training_job_name  # noqa: E402

LIVE_CARD_INTERVAL_S = 5
"""Seconds between refreshes of the train step's live card."""


@ComputeFromConfig("config")  # compute.<step> → @batch / @kubernetes / @secrets
class TuneFlow(FlowSpec):
    config = Config(
        "config",
        default=str(REPO_ROOT / "configs" / "default.yaml"),
        parser=parse_config_text,
        help="Pipeline config (YAML), validated against steps/config.py and stored with the run.",
    )
    corpus = Parameter("corpus", default="", help="Override data.corpus: a folder, glob, s3:// prefix or 'cwe'.")
    base_model = Parameter(
        "base-model", default="", help="Override model.base_model: a HF model folder or s3:// prefix."
    )
    max_steps = Parameter("max-steps", default=0, type=int, help="Override train.max_steps (0 keeps the config's).")

    @property
    def tune(self) -> TuneConfig:
        return TuneConfig.model_validate(self.settings)

    @card
    @step
    def start(self):
        resolved = TuneConfig.model_validate(self.config.to_dict()).with_overrides(
            **{
                "data.corpus": self.corpus,
                "model.base_model": self.base_model,
                "train.max_steps": self.max_steps or None,
            }
        )
        self.settings = resolved.model_dump()
        current.card.extend(tune_cards.config_card(self.settings))
        self.next(self.prepare)

    @card
    @step
    def prepare(self):
        result = stages.prepare_stage(self.tune, run_storage(self))
        self.dataset, self.tokenizer, self.prepare_summary = result["dataset"], result["tokenizer"], result["summary"]
        self.rendezvous_port = free_port()
        current.card.extend(tune_cards.prepare_card(result))
        self.next(self.train, num_parallel=train_tasks(self.tune))

    @card(refresh_interval=LIVE_CARD_INTERVAL_S)
    @parallel
    @step
    def train(self):
        live = tune_cards.LiveTrainCard(self.tune.train.max_steps, refresh_interval_s=LIVE_CARD_INTERVAL_S)
        rdzv = Rendezvous(
            current.parallel.num_nodes, current.parallel.node_index, current.parallel.main_ip, self.rendezvous_port
        )
        with live.shown_on(current.card):
            result = stages.train_on_target(
                self.tune,
                run_storage(self),
                self.dataset,
                self.tokenizer,
                rdzv,
                resume_from=resumed_checkpoints(self),
                on_metrics=live.refresh_with,
                job_name=training_job_name(current.flow_name, current.run_id, current.retry_count),
            )
        self.training_job = (result or {}).get("job")  # a SageMaker job's ARN, billable seconds, metrics
        if result is not None:
            self.checkpoint, self.train_summary, self.train_metrics = (
                result["checkpoint"],
                result["summary"],
                result["metrics"],
            )
            live.update(self.train_metrics)
            current.card.extend(tune_cards.train_card(result))
        self.next(self.convert)

    @card
    @step
    def convert(self, inputs):
        main = next(i for i in inputs if getattr(i, "checkpoint", None))
        self.merge_artifacts(inputs, include=["settings", "dataset", "tokenizer", "prepare_summary"])
        self.training_job = getattr(main, "training_job", None)  # ARN, billable seconds, metrics on SageMaker
        self.checkpoint, self.train_summary, self.train_metrics = (
            main.checkpoint,
            main.train_summary,
            main.train_metrics,
        )
        result = stages.convert_stage(self.tune, run_storage(self), self.checkpoint, self.tokenizer)
        self.model, self.conversion = result["model"], result["verification"]
        current.card.extend(tune_cards.convert_card(result))
        self.next(self.evaluate)

    @card
    @step
    def evaluate(self):
        result = stages.evaluate_stage(self.tune, run_storage(self), self.model, self.dataset, self.train_summary)
        self.evaluation, self.eval_summary, self.eval_table = result["evaluation"], result["summary"], result["table"]
        current.card.extend(tune_cards.evaluate_card(result))
        self.next(self.end)

    @card
    @step
    def end(self):
        self.references = {
            "dataset": self.dataset,
            "tokenizer": self.tokenizer,
            "checkpoint": self.checkpoint,
            "model": self.model,
            "evaluation": self.evaluation,
        }
        current.card.extend(
            tune_cards.end_card(self.references, self.eval_summary, self.conversion, self.train_summary)
        )


if __name__ == "__main__":
    TuneFlow()
