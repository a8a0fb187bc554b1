"""DINO: self-distillation with no labels (Caron et al., ICCV 2021), in one small module.

A student (encoder + DINO head) is trained to match a teacher (an EMA of the student: ema.py,
update_target) across multi-crop views (multicrop.py: 2 global crops first, then the local ones).
Following facebookresearch/dino main_dino.py:

- the teacher sees only the 2 global crops; the student sees all of them;
- teacher probabilities are softmax((t - c) / teacher_temp), centred by an EMA c of the teacher's
  outputs (momentum center_momentum, batch centre summed over all ranks), sharpened by the low
  teacher temperature; the student's are log_softmax(s / student_temp);
- the loss is the cross-entropy H(teacher view i, student view v) averaged over every pair with
  i a global view and v != i (DINOLoss: 2 x (V - 1) pairs), each pair averaged over the batch;
- the centre is updated after the loss is computed, with the teacher outputs of this step.
"""

import copy

import torch
import torch.nn.functional as F
from torch import nn

from pretrain.dist import all_reduce_sum


class WeightNormedLinear(nn.Module):
    """Linear layer without bias whose weight is g * v / ||v|| per output row (weight norm).

    The same function as ``nn.utils.weight_norm(nn.Linear(in, out, bias=False))`` (dim 0) that
    DINO's head uses, written out so that the parameters keep DINO's names (``weight_g``
    [out, 1], ``weight_v`` [out, in]: DINO's full checkpoints load) and the module deep-copies
    (torch's deprecated hook version does not).
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        # v starts from nn.Linear's default init, as in DINO (its trunc-normal init ran before
        # the last layer was made); g starts at 1.
        self.weight_v = nn.Parameter(nn.Linear(in_dim, out_dim, bias=False).weight.detach())
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight_g * self.weight_v / self.weight_v.norm(dim=1, keepdim=True)
        return F.linear(x, weight)


def trunc_normal_init(module: nn.Module) -> None:
    """DINO's init (vision_transformer.py _init_weights): Linear weights trunc-normal std .02 in
    [-2, 2], biases 0; other layers keep PyTorch's defaults."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class DINOHead(nn.Module):
    """DINO's projection head (vision_transformer.py DINOHead, use_bn False, nlayers 3).

    in -> hidden -> hidden -> bottleneck (Linear, GELU, Linear, GELU, Linear; no BN), then
    l2-normalisation and a weight-normed bias-free layer bottleneck -> out_dim. With
    norm_last_layer the scale g is fixed at 1 and not trained (DINO --norm_last_layer true).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        self.mlp.apply(trunc_normal_init)
        self.last_layer = WeightNormedLinear(bottleneck_dim, out_dim)
        self.last_layer.weight_g.requires_grad_(not norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1)  # [..., bottleneck_dim], unit norm
        return self.last_layer(x)  # [..., out_dim]


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """x in float32, or its own dtype when wider: softmaxes over 65,536 classes stay exact under
    bf16/fp16 autocast (autocast runs softmax in float32 too)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def dino_loss(
    student_output: torch.Tensor,
    teacher_output: torch.Tensor,
    center: torch.Tensor,
    *,
    num_crops: int,
    student_temp: float,
    teacher_temp: float,
) -> torch.Tensor:
    """DINO's cross-entropy over view pairs (main_dino.py DINOLoss.forward).

    student_output: [V*B, K], the student's head outputs for all V crops, crop-major (crop 0's B
    rows first). teacher_output: [2*B, K], the teacher's for the 2 global crops. For each global
    crop i and each crop v != i: H(i, v) = mean over the batch of
    sum_k -softmax((t_i - center) / teacher_temp)_k * log_softmax(s_v / student_temp)_k;
    the loss is the mean of H over those 2 (V - 1) pairs. No gradient flows to the teacher.
    """
    log_student = F.log_softmax(at_least_fp32(student_output) / student_temp, dim=-1)
    log_student = log_student.unflatten(0, (num_crops, -1))  # [V, B, K]
    teacher = F.softmax((at_least_fp32(teacher_output) - center) / teacher_temp, dim=-1).detach()
    teacher = teacher.unflatten(0, (2, -1))  # [2, B, K]
    batch_size = teacher.shape[1]
    # cross[i, v] = H(teacher view i, student view v), averaged over the batch
    cross = -torch.einsum("ibk,vbk->iv", teacher, log_student) / batch_size  # [2, V]
    same_view = torch.eye(2, num_crops, dtype=torch.bool, device=cross.device)
    return cross[~same_view].mean()


@torch.no_grad()
def update_center(center: torch.Tensor, teacher_output: torch.Tensor, momentum: float) -> None:
    """center <- momentum * center + (1 - momentum) * mean of teacher_output over all ranks.

    main_dino.py DINOLoss.update_center: the batch mean is the all-reduced sum over the rows of
    every rank divided by the total row count (one all-reduce carries both). In place.
    """
    rows = teacher_output.detach().float().flatten(0, -2)  # [rows, K]
    sum_and_count = torch.cat([rows.sum(dim=0), rows.new_tensor([rows.shape[0]])])
    all_reduce_sum(sum_and_count)
    batch_center = sum_and_count[:-1] / sum_and_count[-1]  # [K]
    center.mul_(momentum).add_(batch_center.view_as(center), alpha=1.0 - momentum)


def crop_runs(crops: list[torch.Tensor]) -> list[tuple[int, int]]:
    """(start, end) of each run of consecutive crops of the same size, in crop order."""
    runs, start = [], 0
    for end in range(1, len(crops) + 1):
        if end == len(crops) or crops[end].shape[-2:] != crops[start].shape[-2:]:
            runs.append((start, end))
            start = end
    return runs


def multicrop_tokens(
    encoder: nn.Module, crops: list[torch.Tensor]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One encoder pass per run of consecutive same-size crops (DINO utils.MultiCropWrapper).

    Returns, per run (:func:`crop_runs`), (pooled [n*B, D], patch tokens [n*B, N, D]) of its n
    crops stacked in crop order; the runs are in crop order too, so concatenating the pooled
    features gives the crop-major [V*B, D] that :func:`dino_loss` expects.
    """
    return [encoder.forward_tokens(torch.cat(crops[start:end])) for start, end in crop_runs(crops)]


def make_teacher(student: nn.Module, teacher: nn.Module) -> nn.Module:
    """The teacher starts as the student (DINO main_dino.py) and receives no gradient."""
    teacher.load_state_dict(student.state_dict())
    teacher.requires_grad_(False)
    return teacher


class DINO(nn.Module):
    """Student encoder + DINO head, teacher encoder + head (an EMA of the student), centre.

    ``student`` and ``teacher`` are two encoders of the same architecture (the teacher without
    drop-path); the teacher gets the student's weights here. The student's pooled feature (the
    final-normed [CLS]) goes through the head, as in DINO.
    """

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
    ) -> None:
        super().__init__()
        self.online_encoder = student
        self.feature_dim = student.embed_dim
        self.online_head = DINOHead(
            student.embed_dim,
            out_dim,
            hidden_dim=hidden_dim,
            bottleneck_dim=bottleneck_dim,
            norm_last_layer=norm_last_layer,
        )
        self.target_encoder = make_teacher(student, teacher)
        self.target_head = make_teacher(self.online_head, copy.deepcopy(self.online_head))
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def online_modules(self) -> nn.ModuleList:
        """The networks the optimiser trains, in the order the teacher mirrors them."""
        return nn.ModuleList([self.online_encoder, self.online_head])

    def target_modules(self) -> nn.ModuleList:
        """The EMA copies of :meth:`online_modules`, in the same order."""
        return nn.ModuleList([self.target_encoder, self.target_head])

    def last_layer_parameters(self) -> list[nn.Parameter]:
        """The head's weight-normed last layer (frozen during the first epoch: DINO
        --freeze_last_layer 1)."""
        return list(self.online_head.last_layer.parameters())

    def forward(
        self, crops: list[torch.Tensor], *, teacher_temp: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (DINO loss, detached student pooled feature of crops[0])."""
        student_pooled = torch.cat(
            [pooled for pooled, _ in multicrop_tokens(self.online_encoder, crops)]
        )
        student_output = self.online_head(student_pooled)  # [V*B, K]
        with torch.no_grad():
            teacher_pooled = torch.cat(
                [pooled for pooled, _ in multicrop_tokens(self.target_encoder, crops[:2])]
            )
            teacher_output = self.target_head(teacher_pooled)  # [2*B, K]
        loss = dino_loss(
            student_output,
            teacher_output,
            self.center,
            num_crops=len(crops),
            student_temp=self.student_temp,
            teacher_temp=teacher_temp,
        )
        if self.training:
            update_center(self.center, teacher_output, self.center_momentum)
        return loss, student_pooled[: crops[0].shape[0]].detach()
