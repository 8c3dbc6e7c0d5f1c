"""A helper module beside the model, imported relatively as zoo models do."""

from __future__ import annotations

from fuxictr.pytorch.layers import MLP_Block


def tower(input_dim: int, hidden_units: list[int]) -> MLP_Block:
    return MLP_Block(input_dim=input_dim, output_dim=1, hidden_units=hidden_units, hidden_activations="ReLU")
