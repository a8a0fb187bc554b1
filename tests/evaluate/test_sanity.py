"""The frozen-encoder check catches a BN layer left in train mode, and any changed weight."""

import pytest
import torch

from evaluate.features import load_encoder
from evaluate.sanity import EncoderChangedError, assert_unchanged, snapshot


def test_eval_mode_forward_leaves_everything_unchanged():
    encoder, _ = load_encoder("random:resnet18")
    before = snapshot(encoder)
    with torch.no_grad():
        encoder(torch.randn(4, 3, 32, 32))
    assert_unchanged(encoder, before)


def test_a_train_mode_forward_is_caught_with_the_bn_buffers_named():
    encoder, _ = load_encoder("random:resnet18")
    before = snapshot(encoder)
    encoder.train()  # the classic bug: BN statistics move although no weight is trained
    with torch.no_grad():
        encoder(torch.randn(4, 3, 32, 32))
    with pytest.raises(EncoderChangedError) as error:
        assert_unchanged(encoder, before)
    message = str(error.value)
    assert "bn1.running_mean" in message and "bn1.num_batches_tracked" in message
    assert "conv1.weight" not in message


def test_a_changed_weight_is_caught():
    encoder, _ = load_encoder("random:resnet18")
    before = snapshot(encoder)
    with torch.no_grad():
        encoder.layer4[1].conv2.weight[0, 0, 0, 0] += 1e-6
    with pytest.raises(EncoderChangedError, match=r"1 tensors.*layer4.1.conv2.weight"):
        assert_unchanged(encoder, before)
