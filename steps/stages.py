"""Every stage of the pipeline, declared once: entry module, launch, named inputs, outputs and summary.

A stage is its spec here and its work in `steps/<stage>/`; `steps.dispatch.runner.run_stage`
runs any spec wherever `compute.<section>` says, and the flow's steps only name the spec and
its inputs. Inputs and outputs are folders by name: `dataset`, `tokenizer`, `base_model`,
`checkpoint` (the train folder), `model`, `instructions`; an output becomes the result's field
of the same name and, in the flow, the input later stages take it as (a stage's input names are
its command line's options: instruction tuning takes the model it starts from as `base_model`).

    spec              entry / phase     launch    inputs                              outputs (in the run's storage)
    PREPARE           steps.prepare     process   -                                   dataset, tokenizer, base_model,
                                                                                      instructions
    PREPARE_READ      --phase read      process   -                                   read (prepare/read/<shard>)
    PREPARE_DECIDE    --phase decide    process   read (every shard's)                decisions, tokenizer, base_model
    PREPARE_ENCODE    --phase encode    process   read, decisions, tokenizer          encoded (prepare/encoded/<shard>)
    PREPARE_PACK      --phase pack      process   encoded (all), decisions, tok.      dataset, instructions (+ decide's)
    TRAIN             steps.train       torchrun  dataset, tokenizer, base_model      checkpoint (train/)
    CONVERT           steps.convert     process   checkpoint, tokenizer               model (convert/model/)
    INSTRUCT          --objective sft   torchrun  instructions, tokenizer, base_model instruct_checkpoint
                                                  (the continued-pretrained model,    (instruct/train/)
                                                  or the base model)
    INSTRUCT_CONVERT  steps.convert     process   checkpoint, tokenizer, base_model   instructed_model
                                                  (LoRA: the model it was trained on) (instruct/model/, adapter/)
    EVALUATE          steps.evaluate    torchrun  model, dataset, base_model,         evaluation (evaluate/)
                                                  pretrained_model, instructions
"""

from __future__ import annotations

from pathlib import Path

from steps.config import TuneConfig
from steps.evaluate.evaluation_folder import EVAL_SUMMARY_FILE, PROGRESS_FILE, read_tables
from steps.evaluate.progress import read_progress_line
from steps.formats.dataset import DATASET_SUMMARY_FILE
from steps.formats.instruction_folder import read_summary
from steps.formats.model_folder import CONVERSION_FILE
from steps.formats.train_folder import METRICS_FILE, TRAIN_SUMMARY_FILE, read_metrics
from steps.prepare.plan_file import failed_shard_headline
from steps.results import (
    ConvertResult,
    EvaluateResult,
    InstructConvertResult,
    InstructResult,
    PrepareDecisions,
    PrepareResult,
    ShardEncoded,
    ShardRead,
    TrainResult,
)
from steps.runtime.stage_spec import Live, Output, StageSpec

_PREPARED = (Output("dataset", "dataset"), Output("tokenizer", "tokenizer"), Output("base_model", "base_model", True))
_INSTRUCTIONS = Output("instructions", "instructions", True)
_PREPARE_SUMMARY = ("prepare_summary", f"dataset/{DATASET_SUMMARY_FILE}")


def _instruction_summary(out: Path) -> dict:
    """The instruction dataset's summary, when prepare wrote one (instruct.instructions set)."""
    folder = out / _INSTRUCTIONS.folder
    return {"instruction_summary": read_summary(folder)} if folder.is_dir() else {}


PREPARE = StageSpec(
    name="prepare",
    module="steps.prepare",
    launch="process",
    compute="prepare",
    folder="prepare",
    result=PrepareResult,
    outputs=(*_PREPARED, _INSTRUCTIONS),
    summary=_PREPARE_SUMMARY,
    read_more=_instruction_summary,
)
PREPARE_READ = StageSpec(
    name="prepare_read",
    module="steps.prepare",
    launch="process",
    compute="prepare",
    folder="prepare/read/{shard}",
    result=ShardRead,
    outputs=(Output("read"),),
    args=("--phase", "read"),
    explain_failure=failed_shard_headline,
)
PREPARE_DECIDE = StageSpec(
    name="prepare_decide",
    module="steps.prepare",
    launch="process",
    compute="prepare",
    folder="prepare",
    result=PrepareDecisions,
    inputs=("read",),
    outputs=(Output("decisions", "decisions"), *_PREPARED[1:]),
    args=("--phase", "decide"),
)
PREPARE_ENCODE = StageSpec(
    name="prepare_encode",
    module="steps.prepare",
    launch="process",
    compute="prepare",
    folder="prepare/encoded/{shard}",
    result=ShardEncoded,
    inputs=("read", "decisions", "tokenizer"),
    outputs=(Output("encoded"),),
    args=("--phase", "encode"),
)
PREPARE_PACK = StageSpec(
    name="prepare_pack",
    module="steps.prepare",
    launch="process",
    compute="prepare",
    folder="prepare",
    result=PrepareResult,
    inputs=("encoded", "decisions", "tokenizer"),
    outputs=(Output("dataset", "dataset"), _INSTRUCTIONS),
    summary=_PREPARE_SUMMARY,
    read_more=_instruction_summary,
    passes=("tokenizer", "base_model"),  # the decide join's, handed on in the one PrepareResult
    args=("--phase", "pack"),
)


def _train_processes(config: TuneConfig) -> int:
    return config.train.nproc_per_node


def _evaluate_hosts(config: TuneConfig) -> int:
    """A SageMaker evaluate job spreads its ranks over several hosts; everywhere else evaluate runs on one."""
    evaluate = config.compute.evaluate
    return evaluate.instance_count if evaluate.target == "sagemaker" else 1


def _training(name: str, folder: str, result: type, data: str, output: str, args: tuple[str, ...] = ()) -> StageSpec:
    """A stage of the one training loop (`steps.train`), on train's machines: continued pretraining or, with
    `--objective sft`, instruction tuning. Its checkpoint is its output, its metrics its live file."""
    return StageSpec(
        name=name,
        module="steps.train",
        launch="torchrun",
        compute=name,
        folder=folder,
        result=result,
        inputs=(data, "tokenizer", "base_model"),
        outputs=(Output(output),),
        summary=(name + "_summary", TRAIN_SUMMARY_FILE),
        read_more=lambda out: {name + "_metrics": read_metrics(out / METRICS_FILE)},
        args=args,
        processes=_train_processes,
        hosts=lambda config: config.train.num_nodes,
        hosts_field="train.num_nodes",
        failure_timeout_s=lambda config: config.train.failure_timeout_s,
        checkpoints=True,
        live=Live(METRICS_FILE, read_metrics, publish=True),
        on_sagemaker=True,
    )


TRAIN = _training("train", "train", TrainResult, "dataset", "checkpoint")
CONVERT = StageSpec(
    name="convert",
    module="steps.convert",
    launch="process",
    compute="convert",
    folder="convert/model",
    result=ConvertResult,
    inputs=("checkpoint", "tokenizer"),
    outputs=(Output("model"),),
    summary=("conversion", CONVERSION_FILE),
    # The train folder holds every kept checkpoint; convert checks the files of the one it reads.
    trusted_inputs=("checkpoint",),
    on_sagemaker=True,
)
INSTRUCT = _training(
    "instruct", "instruct/train", InstructResult, "instructions", "instruct_checkpoint", ("--objective", "sft")
)
"""Instruction tuning: the one training loop (`steps.train`) with the SFT objective, on train's machines."""
INSTRUCT_CONVERT = StageSpec(
    name="instruct_convert",
    module="steps.convert",
    launch="process",
    compute="convert",
    folder="instruct/model",
    result=InstructConvertResult,
    inputs=("checkpoint", "tokenizer", "base_model"),
    outputs=(Output("instructed_model"),),
    summary=("instruct_conversion", CONVERSION_FILE),
    trusted_inputs=("checkpoint",),
    on_sagemaker=True,
)
"""The instruction-tuned checkpoint to a model folder; a LoRA checkpoint's adapters merged into `base_model`."""
EVALUATE = StageSpec(
    name="evaluate",
    module="steps.evaluate",
    launch="torchrun",
    compute="evaluate",
    folder="evaluate",
    result=EvaluateResult,
    inputs=("model", "dataset", "base_model", "pretrained_model", "instructions"),
    outputs=(Output("evaluation"),),
    summary=("eval_summary", EVAL_SUMMARY_FILE),
    read_more=read_tables,
    processes=lambda config: config.evaluate.nproc,
    hosts=_evaluate_hosts,
    hosts_field="compute.evaluate.instance_count",
    live=Live(PROGRESS_FILE, read_progress_line),
    on_sagemaker=True,
)

SPECS = {spec.name: spec for spec in (PREPARE, PREPARE_READ, PREPARE_DECIDE, PREPARE_ENCODE, PREPARE_PACK)}
SPECS |= {spec.name: spec for spec in (TRAIN, CONVERT, INSTRUCT, INSTRUCT_CONVERT, EVALUATE)}
"""By name, for the SageMaker container (`TUNE_STAGE`)."""
