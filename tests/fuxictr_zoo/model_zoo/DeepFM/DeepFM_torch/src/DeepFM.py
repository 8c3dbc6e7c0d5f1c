"""A DeepFM in the zoo's flagship layout (<Model>/<Model>_torch/src): the runner must train
this one, not the DeepFM it bundles for the demo."""

from __future__ import annotations

from typing import Any

from fuxictr.pytorch.layers import FeatureEmbeddingDict, LogisticRegression, MLP_Block
from fuxictr.pytorch.models import BaseModel

__all__ = ["DeepFM"]


class DeepFM(BaseModel):
    def __init__(
        self,
        feature_map: Any,
        model_id: str = "DeepFM",
        gpu: int = -1,
        learning_rate: float = 1e-3,
        embedding_dim: int = 10,
        hidden_units: list[int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(feature_map, model_id=model_id, gpu=gpu, **kwargs)
        self.embedding_layer = FeatureEmbeddingDict(feature_map, embedding_dim)
        self.lr_layer = LogisticRegression(feature_map, use_bias=False)
        self.mlp = MLP_Block(
            input_dim=feature_map.sum_emb_out_dim(),
            output_dim=1,
            hidden_units=hidden_units or [16],
            hidden_activations="ReLU",
        )
        self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
        self.reset_parameters()
        self.model_to_device()

    def forward(self, inputs: dict[str, Any]) -> dict[str, Any]:
        X = self.get_inputs(inputs)
        emb = self.embedding_layer.dict2tensor(self.embedding_layer(X), flatten_emb=True)
        return {"y_pred": self.output_activation(self.lr_layer(X) + self.mlp(emb))}
