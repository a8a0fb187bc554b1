"""Each patch's 3x3 neighbourhood on any patch grid, and the top-k neighbours by cosine similarity.

SelfPatch (Yun et al. 2022; alinlab/SelfPatch selfpatch_vision_transformer.py, SelfPatchHead
get_local_index and forward(loc=True)): a patch's candidates are the other cells of the 3x3
window around it on the patch grid; the teacher keeps the k (4) candidates whose raw backbone
tokens have the highest cosine similarity with the patch's own token. Used by selfpatch.py and by
our byol-patch (byol_patch.py).

Borders: the authors' index wraps around (row +-1 and column +-1 modulo the grid), so an edge
patch's candidates include cells from the opposite edge; that is the default (``wrap=True``).
With ``wrap=False`` a border patch has fewer candidates (5 on an edge, 3 in a corner). Either way
a patch's candidates are the *distinct* cells of its window other than itself (the authors' index
is a set too), so grids with a side below 3 have fewer than 8 even when wrapping.
Generalisation: the authors precompute square 14x14 and 6x6 grids only (any other patch count
fails); this works for any h x w.

Missing candidates are carried as a mask, not dropped, so every patch has 8 slots: ``index``
[N, 8] holds the candidates in ascending patch order (the authors' order) and then, in the
missing slots, the patch's own index as a placeholder; ``valid`` [N, 8] is False there. The
top-k gives missing candidates similarity -inf, so they are chosen only when a patch has fewer
than k real ones, and they come back with valid False (the aggregation masks them out of its
attention; byol-patch leaves them out of its mean).
"""

import torch
import torch.nn.functional as F

WINDOW_SLOTS = 8  # the 3x3 window without its centre


def neighbour_index(
    height: int, width: int, *, wrap: bool = True, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(index [N, 8] long, valid [N, 8] bool) of each patch's 3x3 window on an h x w grid.

    Patches are numbered row-major (row * width + column), N = height * width.
    """
    num_patches = height * width
    patch = torch.arange(num_patches, device=device)[:, None]  # [N, 1]
    rows, cols = patch // width, patch % width
    offsets = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)]
    offsets = torch.tensor(offsets, device=device)  # [8, 2]
    rows, cols = rows + offsets[:, 0], cols + offsets[:, 1]  # [N, 8]
    if wrap:
        rows, cols = rows % height, cols % width
        inside = torch.ones_like(rows, dtype=torch.bool)
    else:
        inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    flat = rows * width + cols
    # A missing slot gets the key N, which sorts last; then repeated cells (tiny grids) go too.
    key = torch.where(inside & (flat != patch), flat, num_patches).sort(dim=1).values
    repeated = torch.zeros_like(inside)
    repeated[:, 1:] = key[:, 1:] == key[:, :-1]
    key = torch.where(repeated, num_patches, key).sort(dim=1).values
    valid = key < num_patches
    return torch.where(valid, key, patch), valid


def top_neighbours(
    tokens: torch.Tensor, index: torch.Tensor, valid: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k candidates most cosine-similar to each patch: (chosen [B, N, k], chosen_valid).

    tokens [B, N, D] (the teacher's raw backbone patch tokens); index, valid from
    :func:`neighbour_index`. Chosen indices point into N, best first. The similarities are
    computed in float32 from the full [B, N, N] cosine matrix (cheaper in memory than the
    authors' [B, N, 8, D] gather).
    """
    if not 1 <= k <= index.shape[1]:
        raise ValueError(f"top-k must be between 1 and {index.shape[1]} neighbours, not {k}")
    unit = F.normalize(tokens.detach().float(), dim=-1)  # [B, N, D]
    similarity = unit @ unit.transpose(1, 2)  # [B, N, N]
    batch = tokens.shape[0]
    candidates = similarity.gather(2, index.expand(batch, -1, -1))  # [B, N, 8]
    candidates = candidates.masked_fill(~valid, float("-inf"))
    slots = candidates.topk(k, dim=-1).indices  # [B, N, k], into the 8 slots
    chosen = index.expand(batch, -1, -1).gather(2, slots)
    return chosen, valid.expand(batch, -1, -1).gather(2, slots)


def gather_neighbours(tokens: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """tokens [B, N, D], chosen [B, N, k] -> the chosen tokens [B, N, k, D]."""
    batch, num_patches, k = chosen.shape
    flat = chosen.reshape(batch, num_patches * k, 1).expand(-1, -1, tokens.shape[-1])
    return tokens.gather(1, flat).view(batch, num_patches, k, tokens.shape[-1])
