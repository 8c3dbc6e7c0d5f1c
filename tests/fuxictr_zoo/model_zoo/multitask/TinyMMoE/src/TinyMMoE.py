"""Two experts mixed per task by a softmax gate, one tower and one `<label>_pred` per label."""

from __future__ import annotations

from typing import Any

import torch
from fuxictr.pytorch.layers import FeatureEmbedding, MLP_Block
from fuxictr.pytorch.models import MultiTaskModel
from torch import nn

__all__ = ["TinyMMoE"]


class TinyMMoE(MultiTaskModel):
    def __init__(
        self,
        feature_map: Any,
        model_id: str = "TinyMMoE",
        gpu: int = -1,
        task: Any = "binary_classification",
        num_tasks: int = 1,
        learning_rate: float = 1e-3,
        embedding_dim: int = 10,
        expert_units: int = 16,
        num_experts: int = 2,
        **kwargs: Any,
    ) -> None:
        super().__init__(feature_map, model_id=model_id, gpu=gpu, task=task, num_tasks=num_tasks, **kwargs)
        input_dim = feature_map.sum_emb_out_dim()
        self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
        self.experts = nn.ModuleList(
            MLP_Block(input_dim=input_dim, hidden_units=[expert_units], hidden_activations="ReLU")
            for _ in range(num_experts)
        )
        self.gates = nn.ModuleList(nn.Linear(input_dim, num_experts) for _ in range(num_tasks))
        self.towers = nn.ModuleList(
            MLP_Block(input_dim=expert_units, output_dim=1, hidden_units=[8], hidden_activations="ReLU")
            for _ in range(num_tasks)
        )
        self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
        self.reset_parameters()
        self.model_to_device()

    def forward(self, inputs: dict[str, Any]) -> dict[str, Any]:
        X = self.get_inputs(inputs)
        flat = self.embedding_layer(X).flatten(start_dim=1)
        experts = torch.stack([expert(flat) for expert in self.experts], dim=1)
        out = {}
        for i, label in enumerate(self.feature_map.labels):
            weights = torch.softmax(self.gates[i](flat), dim=-1).unsqueeze(-1)
            out[f"{label}_pred"] = self.output_activation[i](self.towers[i]((weights * experts).sum(dim=1)))
        return out
