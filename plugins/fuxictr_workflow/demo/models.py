"""Small models from fuxictr's layers for the embedded demo (the fuxictr wheel ships none):
DeepFM (single task) and SharedBottom (multi-task). Users' own models come from their
model_zoo by name."""

from __future__ import annotations

from typing import Any

from fuxictr.pytorch.layers import FactorizationMachine, FeatureEmbedding, MLP_Block
from fuxictr.pytorch.models import BaseModel, MultiTaskModel
from torch import nn


class DeepFM(BaseModel):
    """FM (first + second order) plus an MLP over the concatenated field embeddings."""

    def __init__(
        self,
        feature_map: Any,
        model_id: str = "DeepFM",
        gpu: int = -1,
        learning_rate: float = 1e-3,
        embedding_dim: int = 10,
        hidden_units: list[int] | None = None,
        hidden_activations: str = "ReLU",
        net_dropout: float = 0.0,
        batch_norm: bool = False,
        embedding_regularizer: Any = None,
        net_regularizer: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            feature_map,
            model_id=model_id,
            gpu=gpu,
            embedding_regularizer=embedding_regularizer,
            net_regularizer=net_regularizer,
            **kwargs,
        )
        self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
        self.fm = FactorizationMachine(feature_map)
        self.mlp = MLP_Block(
            input_dim=feature_map.sum_emb_out_dim(),
            output_dim=1,
            hidden_units=hidden_units or [64, 32],
            hidden_activations=hidden_activations,
            output_activation=None,
            dropout_rates=net_dropout,
            batch_norm=batch_norm,
        )
        self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
        self.reset_parameters()
        self.model_to_device()

    def forward(self, inputs: dict[str, Any]) -> dict[str, Any]:
        X = self.get_inputs(inputs)
        feature_emb = self.embedding_layer(X)
        y_pred = self.fm(X, feature_emb) + self.mlp(feature_emb.flatten(start_dim=1))
        return {"y_pred": self.output_activation(y_pred)}


class SharedBottom(MultiTaskModel):
    """One MLP over the field embeddings shared by all tasks, then one tower per label."""

    def __init__(
        self,
        feature_map: Any,
        model_id: str = "SharedBottom",
        gpu: int = -1,
        task: Any = "binary_classification",
        num_tasks: int = 1,
        loss_weight: str = "EQ",
        learning_rate: float = 1e-3,
        embedding_dim: int = 10,
        bottom_hidden_units: list[int] | None = None,
        tower_hidden_units: list[int] | None = None,
        hidden_activations: str = "ReLU",
        net_dropout: float = 0.0,
        batch_norm: bool = False,
        embedding_regularizer: Any = None,
        net_regularizer: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            feature_map,
            model_id=model_id,
            gpu=gpu,
            task=task,
            num_tasks=num_tasks,
            loss_weight=loss_weight,
            embedding_regularizer=embedding_regularizer,
            net_regularizer=net_regularizer,
            **kwargs,
        )
        bottom_units = bottom_hidden_units or [64]
        self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
        self.bottom = MLP_Block(
            input_dim=feature_map.sum_emb_out_dim(),
            hidden_units=bottom_units,
            hidden_activations=hidden_activations,
            output_activation=None,
            dropout_rates=net_dropout,
            batch_norm=batch_norm,
        )
        self.towers = nn.ModuleList(
            MLP_Block(
                input_dim=bottom_units[-1],
                output_dim=1,
                hidden_units=tower_hidden_units or [32],
                hidden_activations=hidden_activations,
                output_activation=None,
                dropout_rates=net_dropout,
                batch_norm=batch_norm,
            )
            for _ in range(num_tasks)
        )
        self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
        self.reset_parameters()
        self.model_to_device()

    def forward(self, inputs: dict[str, Any]) -> dict[str, Any]:
        X = self.get_inputs(inputs)
        shared = self.bottom(self.embedding_layer(X).flatten(start_dim=1))
        return {
            f"{label}_pred": self.output_activation[i](tower(shared))
            for i, (label, tower) in enumerate(zip(self.feature_map.labels, self.towers, strict=True))
        }
