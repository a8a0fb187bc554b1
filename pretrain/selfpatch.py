"""SelfPatch (Yun et al., CVPR 2022): DINO plus a patch-level self-distillation term.

Follows the authors' code, alinlab/SelfPatch @81aef14 (main_selfpatch.py MultiCropWrapper and
DINOLoss, selfpatch_vision_transformer.py SelfPatchHead, DINOHead), read line by line. The ViT
has no [CLS] token and no final norm (config: cls_token false, final_norm false); its raw
last-block patch tokens go to an aggregation module (class_attention.py PatchAggregation), then to
two DINO heads (dino.py DINOHead):

- student, every crop: image token = the learned token after 2 class-attention blocks over all
  patches; outputs LN([token; raw patch tokens]): the token goes to the image head (out_dim),
  each patch to the patch head (patch_out_dim). The student does not aggregate patches.
- teacher, EVERY crop (DEVIATION from DINO, whose teacher sees the 2 global crops only): the same
  image token; for each patch, its top-k (4) of the 8 cells of its 3x3 window by the teacher's
  cosine similarity on the raw backbone tokens (patch_neighbours.py; the patch itself excluded,
  borders wrap around unless wrap is False); target = LN(the learned token after the same 2 blocks
  over those k neighbours only), through the patch head.
- L_image: dino.dino_loss between the teacher's image token of the 2 global crops and the
  student's of every other crop (2 (V - 1) pairs), centre ``center``.
- L_patch: for each crop v, H(softmax((t_v,i - c_p) / teacher_temp), log_softmax(s_v,i /
  student_temp)) averaged over the batch and the patches i, then averaged over the V crops: the
  teacher and student are paired on the SAME crop. c_p (``patch_center``) is its own centre.
- loss = L_image + patch_loss_weight * L_patch (the authors hard-code 0.1).
- Centres, after the loss (DINO's order): ``patch_center`` with every teacher patch output of
  every crop (each patch weighs the same); ``center`` with the teacher image tokens of ALL V
  crops: DEVIATION from DINO (whose centre sees the 2 global crops only), as in the authors'
  code (DINOLoss.update_center(torch.cat(teacher_cls))).
- The EMA covers all student parameters: encoder, aggregation, both heads (main_selfpatch.py).
"""

import copy

import torch
import torch.nn.functional as F
from torch import nn

from pretrain.class_attention import PatchAggregation
from pretrain.config import ConfigError
from pretrain.dino import (
    DINOHead,
    at_least_fp32,
    crop_runs,
    dino_loss,
    make_teacher,
    multicrop_tokens,
    update_center,
)
from pretrain.patch_neighbours import (
    WINDOW_SLOTS,
    gather_neighbours,
    neighbour_index,
    top_neighbours,
)


def patch_loss(
    student_patches: list[torch.Tensor],
    teacher_patches: list[torch.Tensor],
    patch_center: torch.Tensor,
    *,
    crops_per_run: list[int],
    student_temp: float,
    teacher_temp: float,
) -> torch.Tensor:
    """SelfPatch's patch term (main_selfpatch.py DINOLoss.forward, the v == iq branch).

    student_patches / teacher_patches: per run of same-size crops, [n*B, N, K] head outputs of its
    n crops (crop-major). Per crop: mean over batch and patches of
    sum_k -softmax((t - patch_center) / teacher_temp)_k * log_softmax(s / student_temp)_k;
    the result is the mean over all crops. No gradient flows to the teacher.
    """
    per_crop = []
    for student, teacher, num_crops in zip(student_patches, teacher_patches, crops_per_run):
        log_student = F.log_softmax(at_least_fp32(student) / student_temp, dim=-1)
        target = F.softmax((at_least_fp32(teacher) - patch_center) / teacher_temp, dim=-1)
        cross_entropy = -(target.detach() * log_student).sum(dim=-1)  # [n*B, N]
        per_crop.append(cross_entropy.unflatten(0, (num_crops, -1)).mean(dim=(1, 2)))  # [n]
    return torch.cat(per_crop).mean()


def encoder_num_heads(encoder: nn.Module) -> int:
    """The attention heads of a timm-style ViT (blocks[0].attn.num_heads): the aggregation
    module uses the encoder's head count, as the authors' code (student.num_heads)."""
    try:
        return int(encoder.blocks[0].attn.num_heads)
    except AttributeError as error:
        raise ConfigError("selfpatch needs a ViT encoder (blocks[i].attn.num_heads)") from error


class SelfPatch(nn.Module):
    """Student encoder + aggregation + image head + patch head; the teacher copies them (EMA)."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        out_dim: int,
        hidden_dim: int,
        bottleneck_dim: int,
        norm_last_layer: bool,
        student_temp: float,
        center_momentum: float,
        patch_out_dim: int,
        patch_loss_weight: float,
        topk: int,
        wrap: bool,
    ) -> None:
        super().__init__()
        if not 1 <= topk <= WINDOW_SLOTS:
            raise ConfigError(f"patch top-k must be between 1 and 8 (the 3x3 window), not {topk}")
        dim = self.feature_dim = student.embed_dim
        heads = dict(hidden_dim=hidden_dim, bottleneck_dim=bottleneck_dim)
        self.online_encoder = student
        self.online_aggregation = PatchAggregation(dim, encoder_num_heads(student))
        self.online_head = DINOHead(dim, out_dim, norm_last_layer=norm_last_layer, **heads)
        self.online_patch_head = DINOHead(
            dim, patch_out_dim, norm_last_layer=norm_last_layer, **heads
        )
        self.target_encoder = make_teacher(student, teacher)
        self.target_aggregation, self.target_head, self.target_patch_head = (
            make_teacher(online, copy.deepcopy(online))
            for online in (self.online_aggregation, self.online_head, self.online_patch_head)
        )
        self.student_temp, self.center_momentum = student_temp, center_momentum
        self.patch_loss_weight, self.topk, self.wrap = patch_loss_weight, topk, wrap
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.register_buffer("patch_center", torch.zeros(1, patch_out_dim))
        self.loss_terms: dict[str, torch.Tensor] = {}  # the last forward's terms, for logging

    def online_modules(self) -> nn.ModuleList:
        """The networks the optimiser trains, in the order the teacher mirrors them."""
        return nn.ModuleList(
            [self.online_encoder, self.online_aggregation, self.online_head, self.online_patch_head]
        )

    def target_modules(self) -> nn.ModuleList:
        """The EMA copies of :meth:`online_modules`, in the same order."""
        return nn.ModuleList(
            [self.target_encoder, self.target_aggregation, self.target_head, self.target_patch_head]
        )

    def last_layer_parameters(self) -> list[nn.Parameter]:
        """Both heads' weight-normed last layers (the authors freeze every 'last_layer' in
        epoch 0: utils.cancel_gradients_last_layer)."""
        return [
            *self.online_head.last_layer.parameters(),
            *self.online_patch_head.last_layer.parameters(),
        ]

    def student_outputs(self, crops: list[torch.Tensor]):
        """Per run of same-size crops: (pooled feature [n*B, D], image logits [n*B, K], patch
        logits [n*B, N, Kp])."""
        outputs = []
        for pooled, patches in multicrop_tokens(self.online_encoder, crops):
            image_token, patch_tokens = self.online_aggregation.student(patches)
            image_logits = self.online_head(image_token)
            outputs.append((pooled, image_logits, self.online_patch_head(patch_tokens)))
        return outputs

    @torch.no_grad()
    def teacher_outputs(self, crops: list[torch.Tensor]):
        """Per run, on every crop: (image logits [n*B, K], patch targets [n*B, N, Kp])."""
        outputs = []
        runs = crop_runs(crops)
        for (start, _), (_, patches) in zip(runs, multicrop_tokens(self.target_encoder, crops)):
            grid = self.target_encoder.grid(*crops[start].shape[-2:])
            index, valid = neighbour_index(*grid, wrap=self.wrap, device=patches.device)
            chosen, chosen_valid = top_neighbours(patches, index, valid, self.topk)
            neighbours = gather_neighbours(patches, chosen)  # [n*B, N, k, D]
            image_token, targets = self.target_aggregation.teacher(
                patches, neighbours, chosen_valid
            )
            outputs.append((self.target_head(image_token), self.target_patch_head(targets)))
        return outputs

    def forward(
        self, crops: list[torch.Tensor], *, teacher_temp: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (L_image + patch_loss_weight * L_patch, detached student pooled feature of
        crops[0])."""
        student_pooled, student_image, student_patch = zip(*self.student_outputs(crops))
        teacher_image, teacher_patch = zip(*self.teacher_outputs(crops))
        teacher_image = torch.cat(teacher_image)  # [V*B, K]
        batch = crops[0].shape[0]
        image_loss = dino_loss(
            torch.cat(student_image),
            teacher_image[: 2 * batch],
            self.center,
            num_crops=len(crops),
            student_temp=self.student_temp,
            teacher_temp=teacher_temp,
        )
        patch_term = patch_loss(
            list(student_patch),
            list(teacher_patch),
            self.patch_center,
            crops_per_run=[end - start for start, end in crop_runs(crops)],
            student_temp=self.student_temp,
            teacher_temp=teacher_temp,
        )
        if self.training:
            update_center(self.center, teacher_image, self.center_momentum)
            patch_rows = torch.cat([t.flatten(0, -2) for t in teacher_patch])  # [V*B*N, Kp]
            update_center(self.patch_center, patch_rows, self.center_momentum)
        self.loss_terms = {"image": image_loss.detach(), "patch": patch_term.detach()}
        loss = image_loss + self.patch_loss_weight * patch_term
        return loss, student_pooled[0][:batch].detach()
