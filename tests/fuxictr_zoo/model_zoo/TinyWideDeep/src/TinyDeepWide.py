"""A variant kept in TinyWideDeep's package, as FuXiCTR's zoo keeps GDCNP in GDCN/src and
APG_DeepFM in APG/src: the experiment names a class that has no `<Model>/src` of its own.
Here the deep tower reads the wide logit next to the embeddings instead of adding to it."""

from __future__ import annotations

from typing import Any

import torch
from fuxictr.pytorch.layers import FeatureEmbeddingDict, LogisticRegression
from fuxictr.pytorch.models import BaseModel

from .towers import tower

__all__ = ["TinyDeepWide"]


class TinyDeepWide(BaseModel):
    def __init__(
        self,
        feature_map: Any,
        model_id: str = "TinyDeepWide",
        gpu: int = -1,
        learning_rate: float = 1e-3,
        embedding_dim: int = 10,
        hidden_units: list[int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(feature_map, model_id=model_id, gpu=gpu, **kwargs)
        self.embedding_layer = FeatureEmbeddingDict(feature_map, embedding_dim)
        self.wide = LogisticRegression(feature_map, use_bias=True)
        self.deep = tower(feature_map.sum_emb_out_dim() + 1, hidden_units or [16])
        self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
        self.reset_parameters()
        self.model_to_device()

    def forward(self, inputs: dict[str, Any]) -> dict[str, Any]:
        X = self.get_inputs(inputs)
        emb = self.embedding_layer.dict2tensor(self.embedding_layer(X), flatten_emb=True)
        return {"y_pred": self.output_activation(self.deep(torch.cat([emb, self.wide(X)], dim=-1)))}
