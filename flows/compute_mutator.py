"""Apply `compute.<step>` of the flow's config as Metaflow decorators (@batch, @kubernetes, @secrets).

The flow file stays free of infrastructure: the same flow runs locally, on AWS
Batch or on Kubernetes depending only on the config. Decorators given on the
command line (`--with batch`) or in the code win over the config.
"""

from __future__ import annotations

from metaflow import FlowMutator

from steps.config import TuneConfig
from steps.dispatch.decorators import flow_decorators

SECTION_STEPS = {
    "prepare": ("prepare_read", "prepare_decide", "prepare_encode", "prepare"),
    "convert": ("convert", "instruct_convert"),
}
# (prepare_reads and prepare_gather only collect references, the launch steps only start @parallel tasks:
# they run where the flow runs.)
"""Flow steps that run where one `compute.<section>` says: prepare's foreach tasks and joins, both conversions."""


class ComputeFromConfig(FlowMutator):
    def init(self, config_name: str = "config") -> None:
        self.config_name = config_name

    def pre_mutate(self, mutable_flow) -> None:
        configs = dict(mutable_flow.configs)
        value = configs.get(self.config_name)
        if value is None:  # the flow was loaded without its config (e.g. by the client API)
            return
        config = TuneConfig.model_validate(value.to_dict())
        steps = dict(mutable_flow.steps)
        for section, decorators in flow_decorators(config).items():
            for step_name in SECTION_STEPS.get(section, (section,)):
                for name, kwargs in decorators:
                    steps[step_name].add_decorator(name, deco_kwargs=kwargs)
