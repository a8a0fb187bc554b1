"""Transfer of a pretrained backbone to other tasks (docs/architecture.md, transfer/).

Detection: `python -m transfer.detection` (protocols in detection_protocols.py; readers in
datasets.py; models in detection_models.py; loop in detection_train.py; AP in voc_eval.py and
coco_eval.py). Segmentation: `python -m transfer.segmentation`. Exports for external engines:
`python -m transfer.export {detectron2,mmseg}` (detectron2_export.py, mmseg_export.py).
"""
