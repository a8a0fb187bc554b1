"""Frozen-feature dense probes: a linear head per pixel on a frozen encoder's cached feature maps.

features.py  the encoder's conv5 map of every image at one fixed test view, cached on disk
heads.py     SegmentationProbes (BN + 1x1 conv) and DepthBinProbes (DINOv2's linear depth bins)
train.py     one training loop for every head and LR at once, LR chosen on held-out images
protocols.py the protocol presets (frozen-linear-seg/1, frozen-linear-seg-ade20k/1)
segmentation.py  what `python -m transfer.segmentation --protocol frozen-linear-seg/1` runs

After DINOv2 (Oquab et al. 2023, §7; facebookresearch/dinov2), whose probes are for ViT patch
tokens; the ResNet version (conv5, no [CLS] token) is OUR adaptation, not a published protocol.
"""
