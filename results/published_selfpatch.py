"""SelfPatch's dense numbers (ViT-S/16: DINO vs DINO + SelfPatch) as records of kind "published".

Source: Yun et al., "Patch-level Representation Learning for Self-supervised Vision Transformers",
CVPR 2022 (arXiv 2206.07990), as the authors' repository (alinlab/SelfPatch) lists them in
detection/README.md (COCO, Mask R-CNN 1x: bbox mAP, mask mAP) and segmentation/README.md (ADE20K
val: Semantic FPN 40k and UperNet 160k, mIoU); docs: the SelfPatch facts sheet, section 4. The
abstract's deltas (+1.3 box AP, +1.2 mask AP, +2.9 mIoU) agree with these rows.

The DINO row is NOT the official DINO ViT-S/16 (Caron et al. 2021): the README's DINO baseline is
"pretrained model from VISSL", so its label says so; its pretraining epochs, like SelfPatch's
(200 in the first README, unverified in the paper), are left unstated. AP50/AP75 are not in the
READMEs, so these detection records carry box and mask AP only.

Protocol names are the ones our CLIs record for the same measurement (issue 19):
    detection     selfpatch-coco-maskrcnn-vit-1x/1     COCO val2017: "ap" (box), "mask_ap"
    segmentation  selfpatch-ade20k-semfpn-vit-40k/1    ADE20K val: "miou"
                  selfpatch-ade20k-upernet-vit-160k/1  ADE20K val: "miou" (no config shipped)
"""

from __future__ import annotations

from results.record import Record, Task, published_record

PAPER = "Yun et al. 2022, SelfPatch (CVPR 2022, arXiv 2206.07990)"
PAPER_DATE = "2022-06-16T00:00:00Z"  # arXiv v1
ARCH = "vit_small_patch16"  # ViT-S/16 (pretrain/vit.py), the only arch the READMEs report
DETECTION_PROTOCOL = "selfpatch-coco-maskrcnn-vit-1x/1"
SEMFPN_PROTOCOL = "selfpatch-ade20k-semfpn-vit-40k/1"
UPERNET_PROTOCOL = "selfpatch-ade20k-upernet-vit-160k/1"
PROTOCOLS = (DETECTION_PROTOCOL, SEMFPN_PROTOCOL, UPERNET_PROTOCOL)

_LABELS = {  # checkpoint.label: one table row per method
    "dino": "DINO ViT-S/16 (VISSL), as reported by Yun et al. 2022",
    "selfpatch": "Yun et al. 2022 (DINO + SelfPatch)",
}
# detection/README.md, "Pretrained weights on MS-COCO": bbox mAP, mask mAP (Mask R-CNN, 1x)
_COCO = {"dino": (40.8, 37.3), "selfpatch": (42.1, 38.5)}
# segmentation/README.md, "Pretrained weights on ADE20K": mIoU per (decoder, iterations)
_ADE20K = {
    SEMFPN_PROTOCOL: {"dino": 38.3, "selfpatch": 41.2},  # Semantic FPN, 40k
    UPERNET_PROTOCOL: {"dino": 42.3, "selfpatch": 43.2},  # UperNet, 160k
}


def _record(readme: str, method: str, task: Task, metrics: dict) -> Record:
    slug = f"{task.family}-{task.dataset}-{task.protocol}-{ARCH}-{method}"
    return published_record(
        "published-selfpatch-" + slug.lower().replace("/", "-"),
        source=PAPER,
        published_utc=PAPER_DATE,
        label=_LABELS[method],
        arch=ARCH,
        method=method,
        task=task,
        metrics=metrics,
        table=f"alinlab/SelfPatch {readme}",
    )


def selfpatch_records() -> list[Record]:
    """The four README numbers per method (DINO, DINO + SelfPatch) as six records."""
    records = []
    for method, (box_ap, mask_ap) in _COCO.items():
        task = Task("detection", "coco", "val2017", DETECTION_PROTOCOL)
        metrics = {"ap": box_ap, "mask_ap": mask_ap}
        records.append(_record("detection/README.md", method, task, metrics))
    for protocol, by_method in _ADE20K.items():
        for method, miou in by_method.items():
            task = Task("segmentation", "ade20k", "val", protocol)
            records.append(_record("segmentation/README.md", method, task, {"miou": miou}))
    return records
