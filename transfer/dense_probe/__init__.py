"""Frozen-feature dense probes: a linear head per pixel on a frozen encoder's cached feature maps.

maps.py      what the head reads: a ResNet's conv5 map, or a ViT's last-block patch grid
features.py  those maps of every image at one fixed test view, cached on disk
heads.py     SegmentationProbes (BN + 1x1 conv) and DepthBinProbes (DINOv2's linear depth bins)
train.py     one training loop for every head and LR at once, LR chosen on held-out images
protocols.py the protocol presets (frozen-linear-seg/1, frozen-linear-seg-ade20k/1,
             frozen-linear-depth/1, frozen-linear-depth-labelled795/1): any backbone
segmentation.py, depth.py  what the segmentation and depth CLIs run for those protocols

After DINOv2 (Oquab et al. 2023, §7; facebookresearch/dinov2), whose probes are for ViT patch
tokens (a ViT's map here is DINOv2's own input, maps.py); the ResNet version (conv5, no [CLS]
token) is OUR adaptation. Neither is a published protocol: the cached fixed view replaces DINOv2's
random-crop training and sliding-window test (protocols.py).
"""
