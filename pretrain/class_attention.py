"""SelfPatch's aggregation module: a learned query token, two class-attention blocks, LayerNorm.

Yun et al. 2022 (alinlab/SelfPatch selfpatch_vision_transformer.py, SelfPatchHead with
Class_Attention and LayerScale_Block_CA). Class attention is CaiT's (Touvron et al. 2021): the
query comes from the query token only, keys and values from [query token; inputs], so the inputs
are read but not updated. Each block: q <- q + CA(LN([q; inputs])), q <- q + MLP(LN(q)), with
LN eps 1e-6, MLP ratio 4 (GELU), qkv biases, the encoder's head count and, despite the authors'
class name, no LayerScale. A final LayerNorm (eps 1e-6) follows. Init as the authors': query
token and Linear weights trunc-normal std .02, biases 0.

The authors' Class_Attention takes an optional key mask (unused in their released path); here it
masks the missing neighbours of border patches when the neighbourhood does not wrap around.
"""

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn

from pretrain.dino import trunc_normal_init


class ClassAttention(nn.Module):
    """Multi-head attention whose only query is token 0 (CaiT class attention)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_valid: torch.Tensor | None = None) -> torch.Tensor:
        """x: [M, 1 + L, D] (query token first); key_valid: [M, L] bool or None (all valid).
        Returns the attended query token [M, 1, D]."""
        heads = lambda t: t.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # noqa: E731
        query = heads(self.q(x[:, :1]))  # [M, H, 1, D/H]
        key, value = heads(self.k(x)), heads(self.v(x))  # [M, H, 1 + L, D/H]
        mask = None
        if key_valid is not None:  # the query token itself is always a valid key
            mask = torch.cat([key_valid.new_ones(key_valid.shape[0], 1), key_valid], dim=1)
            mask = mask[:, None, None, :]  # [M, 1, 1, 1 + L]
        attended = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
        return self.proj(attended.transpose(1, 2).flatten(2))  # [M, 1, D]


class ClassAttentionBlock(nn.Module):
    """Pre-norm residual block around :class:`ClassAttention` and an MLP, for the query only."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ClassAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward(
        self, query: torch.Tensor, inputs: torch.Tensor, key_valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """query [M, 1, D], inputs [M, L, D] -> updated query [M, 1, D]."""
        query = query + self.attn(self.norm1(torch.cat([query, inputs], dim=1)), key_valid)
        return query + self.mlp(self.norm2(query))


class PatchAggregation(nn.Module):
    """SelfPatchHead: the learned token attends (2 CA blocks) over a set of tokens; final LN."""

    def __init__(self, dim: int, num_heads: int, depth: int = 2) -> None:
        super().__init__()
        self.query_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(ClassAttentionBlock(dim, num_heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        nn.init.trunc_normal_(self.query_token, std=0.02)
        self.blocks.apply(trunc_normal_init)

    def aggregate(
        self, inputs: torch.Tensor, key_valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The learned token after the blocks over ``inputs`` [M, L, D] -> [M, D] (before LN)."""
        query = self.query_token.expand(inputs.shape[0], -1, -1)  # [M, 1, D]
        for block in self.blocks:
            query = block(query, inputs, key_valid)
        return query[:, 0]

    def student(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Student path (authors' loc=False): LN(image token over all patches), LN(patches).

        patches [B, N, D] -> (image token [B, D], patch outputs [B, N, D]); the student does not
        aggregate patches: each output is the LayerNorm of its own raw token.
        """
        image_token = self.aggregate(patches)
        return self.norm(image_token), self.norm(patches)

    def teacher(
        self, patches: torch.Tensor, neighbours: torch.Tensor, neighbour_valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher path (authors' loc=True): LN(image token over all patches), and per patch
        LN(the token over its chosen neighbours only: the patch itself is not among them).

        patches [B, N, D], neighbours [B, N, k, D], neighbour_valid [B, N, k] bool ->
        (image token [B, D], patch targets [B, N, D]).
        """
        image_token = self.aggregate(patches)
        batch, num_patches, k, dim = neighbours.shape
        targets = self.aggregate(
            neighbours.reshape(batch * num_patches, k, dim),
            neighbour_valid.reshape(batch * num_patches, k),
        )  # [B*N, D]
        return self.norm(image_token), self.norm(targets.view(batch, num_patches, dim))
