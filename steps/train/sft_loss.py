"""The instruction-tuning loss through the LM head of the positions that carry a label, and only those.

A causal LM's own loss projects every position through the output head and takes a softmax over the whole
vocabulary there: for SmolLM2 (576 wide, 49,152 tokens) that is a fifth of the model's FLOPs and a
(batch, length, vocabulary) fp32 tensor, while in a chat conversation only the assistant's answers carry a
label. `score_labelled_positions_only` runs the backbone, gathers the hidden states whose next token is
labelled and projects those alone: the same loss (up to summation order), less work and memory. TRL's
SFTTrainer does the same on GPUs (`trl.trainer.utils.add_fused_lm_head`, compacting only where Triton runs).

It patches the model's `forward` in place, as TRL does, so that parameter names, checkpoints and the
DeepSpeed engine see the model unchanged; patch before wrapping with PEFT (PEFT calls the base model's
`forward`). Called without labels (the logits check, evaluation, generation) it is the model's own forward.
"""

from __future__ import annotations

import functools
import types

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from steps.formats.chat_template import IGNORE_INDEX


def labelled_positions_loss(
    model: PreTrainedModel, hidden: torch.Tensor, labels: torch.Tensor, num_items_in_batch: float | None
) -> torch.Tensor:
    """Summed cross-entropy of the labelled next tokens over `num_items_in_batch` (default: their count).

    A micro-batch without labels gives a zero loss (not 0 / 0) whose graph still reaches every parameter through
    the empty selection, so that DeepSpeed's backward and gradient reduction run on every rank alike.
    """
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    logits = model.get_output_embeddings()(hidden[:, :-1][keep]).float()
    summed = F.cross_entropy(logits, targets[keep], reduction="sum")
    denominator = num_items_in_batch if num_items_in_batch is not None else max(int(keep.sum()), 1)
    return summed / denominator


def score_labelled_positions_only(model: PreTrainedModel) -> PreTrainedModel:
    """Patch `model.forward` so that a call with `labels` projects only the labelled positions (see above)."""
    original = model.forward

    @functools.wraps(type(model).forward)  # generate checks its keyword arguments against this signature
    def forward(self, input_ids=None, attention_mask=None, labels=None, num_items_in_batch=None, **kwargs):
        if labels is None:
            return original(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        for unused in ("output_attentions", "output_hidden_states", "return_dict", "use_cache"):
            kwargs.pop(unused, None)  # PEFT passes these through; the backbone's defaults are what is wanted
        backbone = getattr(self, self.base_model_prefix)
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs)
        loss = labelled_positions_loss(self, hidden.last_hidden_state, labels, num_items_in_batch)
        return CausalLMOutputWithPast(loss=loss)

    model.forward = types.MethodType(forward, model)
    return model
