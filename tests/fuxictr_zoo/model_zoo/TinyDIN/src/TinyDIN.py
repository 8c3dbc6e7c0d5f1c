"""DIN-style target attention over a behaviour sequence that shares the candidate's embedding
table (share_embedding, no pooling encoder), as the zoo's DIN/BST configs set it up."""

from __future__ import annotations

from typing import Any

from fuxictr.pytorch.layers import DIN_Attention, FeatureEmbeddingDict, MLP_Block
from fuxictr.pytorch.models import BaseModel

__all__ = ["TinyDIN"]


class TinyDIN(BaseModel):
    def __init__(
        self,
        feature_map: Any,
        model_id: str = "TinyDIN",
        gpu: int = -1,
        learning_rate: float = 1e-3,
        embedding_dim: int = 10,
        hidden_units: list[int] | None = None,
        din_target_field: str = "adgroup_id",
        din_sequence_field: str = "click_sequence",
        **kwargs: Any,
    ) -> None:
        super().__init__(feature_map, model_id=model_id, gpu=gpu, **kwargs)
        self.target_field, self.sequence_field = din_target_field, din_sequence_field
        self.embedding_layer = FeatureEmbeddingDict(feature_map, embedding_dim)
        self.attention = DIN_Attention(embedding_dim, attention_units=[16], hidden_activations="ReLU")
        self.mlp = MLP_Block(
            input_dim=feature_map.sum_emb_out_dim(),
            output_dim=1,
            hidden_units=hidden_units or [32],
            hidden_activations="ReLU",
        )
        self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
        self.reset_parameters()
        self.model_to_device()

    def forward(self, inputs: dict[str, Any]) -> dict[str, Any]:
        X = self.get_inputs(inputs)
        emb = self.embedding_layer(X)
        mask = X[self.sequence_field].long() != 0  # padding_idx 0
        emb[self.sequence_field] = self.attention(emb[self.target_field], emb[self.sequence_field], mask)
        flat = self.embedding_layer.dict2tensor(emb, flatten_emb=True)
        return {"y_pred": self.output_activation(self.mlp(flat))}
