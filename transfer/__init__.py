"""Transfer of a pretrained backbone to other tasks, one subpackage per task (docs/architecture.md).

- `python -m transfer.detection` (transfer/detection/): protocols, readers, models, the training
  loop, VOC/COCO AP, and the detectron2 export + runner.
- `python -m transfer.segmentation` (transfer/segmentation/): protocols, readers, augmentation,
  models, the training loop, mIoU, and the mmsegmentation export + runner.
- `python -m transfer.export {detectron2,mmseg}`: the exports for external engines.
"""
