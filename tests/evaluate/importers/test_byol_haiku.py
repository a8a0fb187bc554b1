"""The authors' BYOL release, for real: Haiku's own ResNet-50 with random weights, saved in the
released file's structure, imported, and compared feature by feature with Haiku's forward.

The file is written as deepmind-research byol/utils/checkpointing.py writes it: `dill.dump(
{experiment_state, step, rng}, protocol=2)`, experiment_state a `_ByolExperimentState` namedtuple
(dill pickles it by value, through `dill._dill._create_namedtuple`), params and state in Haiku's
immutable containers (pickled as `haiku._src.data_structures.FlatMapping`), arrays as numpy. dill
is not a dependency: writers.py's `DillStylePickler` emits the same opcodes, with a stand-in
`dill._dill` module present only while the file is written.
"""

import collections
import sys

import haiku as hk  # the [haiku] extra; `make test` installs it (CPU wheels)
import jax
import numpy as np
import pytest
import torch

from evaluate import knn
from evaluate.convert import ConvertConfig, convert
from evaluate.features import load_encoder
from evaluate.importers import load_foreign
from pretrain.backbones import build_backbone
from results.frame import method_name
from tests.evaluate.conftest import only_record
from tests.evaluate.importers.writers import dump_dill_style

pytestmark = pytest.mark.slow
IMAGE_SIZE = 64  # px; 64 -> conv1 pads (2, 3) in SAME against torchvision's (3, 3)
FIELDS = ("online_params", "target_params", "online_state", "target_state", "opt_state")


def _forward(images, is_training):
    # num_classes = 2048 with an identity logits layer: Haiku's output is the pooled features.
    return hk.nets.ResNet50(num_classes=2048)(images, is_training=is_training)


def _random_params_and_state(seed: int, images: np.ndarray):
    """Haiku's ResNet-50 trees filled with random values (non-trivial BN scale, offset, stats)."""
    transformed = hk.transform_with_state(_forward)
    shapes = jax.eval_shape(lambda: transformed.init(jax.random.PRNGKey(0), images, True))
    rng = np.random.default_rng(seed)

    def param(path, name, shape):
        if path.endswith("logits"):
            return np.eye(2048, dtype=np.float32) if name == "w" else np.zeros(shape, np.float32)
        if name == "w":  # fan-in scaled, so that features stay O(1) through 16 blocks
            return (rng.standard_normal(shape) * np.sqrt(2 / np.prod(shape[:-1]))).astype("f4")
        if name == "scale":
            return rng.uniform(0.5, 1.0, shape).astype(np.float32)
        return rng.normal(0, 0.1, shape).astype(np.float32)

    def stat(path, name, shape):
        if name == "counter":
            return np.asarray(5004, np.int32)
        low, high = (-0.1, 0.1) if path.endswith("mean_ema") else (0.5, 1.5)
        return rng.uniform(low, high, shape).astype(np.float32)

    params = {p: {n: param(p, n, s.shape) for n, s in d.items()} for p, d in shapes[0].items()}
    state = {p: {n: stat(p, n, s.shape) for n, s in d.items()} for p, d in shapes[1].items()}
    return transformed, params, state


def _with_heads(params: dict, seed: int) -> dict:
    """Add BYOL's projector, predictor and classifier, as in byol_experiment.py's forward."""
    rng = np.random.default_rng(seed)
    heads = {
        "projector/~/linear": {"w": rng.standard_normal((2048, 16)), "b": np.zeros(16)},
        "predictor/~/linear": {"w": rng.standard_normal((16, 16)), "b": np.zeros(16)},
        "classifier": {"w": rng.standard_normal((2048, 10)), "b": np.zeros(10)},
    }
    return {
        **params,
        **{k: {n: v.astype(np.float32) for n, v in d.items()} for k, d in heads.items()},
    }


def write_release(path, online, target) -> None:
    """The released file's structure, with Haiku's containers, pickled as dill(protocol=2)."""
    experiment_state_type = collections.namedtuple("_ByolExperimentState", FIELDS)
    experiment_state_type.__module__ = "byol.byol_experiment"
    trace_state_type = collections.namedtuple("TraceState", ["trace"])
    trace_state_type.__module__ = "optax._src.transform"
    immutable = hk.data_structures.to_immutable_dict
    experiment_state = experiment_state_type(
        online_params=immutable(online[0]),
        target_params=immutable(target[0]),
        online_state=immutable(online[1]),
        target_state=immutable(target[1]),
        opt_state=(trace_state_type(trace=immutable(online[0])), ()),
    )
    blob = {
        "experiment_state": experiment_state,
        "step": 5004,
        "rng": np.asarray(jax.random.PRNGKey(3)),
    }
    dump_dill_style(path, blob)


@pytest.fixture(scope="module")
def haiku_release(tmp_path_factory):
    """(file, images NCHW, Haiku's online features, online and target trees)."""
    images = np.random.default_rng(0).uniform(0, 1, (2, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("f4")
    transformed, params, state = _random_params_and_state(1, images)
    _, target_params, target_state = _random_params_and_state(2, images)
    features, _ = transformed.apply(params, state, None, images, False)  # eval: EMA BN stats
    path = tmp_path_factory.mktemp("byol") / "pretrain_res50x1.pkl"
    write_release(
        path, (_with_heads(params, 3), state), (_with_heads(target_params, 4), target_state)
    )
    nchw = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    return path, nchw, np.asarray(features), (params, state), (target_params, target_state)


def _features(state_dict: dict, padding: str, images: torch.Tensor) -> np.ndarray:
    model, _ = build_backbone("resnet50", padding=padding)
    model.load_state_dict(state_dict, strict=True)
    with torch.no_grad():
        return model.eval()(images).numpy()


def test_the_file_is_what_the_release_pickles(haiku_release):
    """Sanity of the writer: a raw protocol-2 pickle naming dill's and Haiku's globals."""
    data = haiku_release[0].read_bytes()
    assert data[:2] == b"\x80\x02"
    for name in (
        b"dill._dill",
        b"_create_namedtuple",
        b"haiku._src.data_structures",
        b"FlatMapping",
        b"_reconstruct",
    ):
        assert name in data
    assert "dill" not in sys.modules or not hasattr(sys.modules["dill"], "_dill")


def test_same_padding_reproduces_haiku_features(haiku_release):
    path, images, expected, _, _ = haiku_release
    state_dict, metadata = load_foreign(path)
    assert metadata["source_format"] == "byol-haiku"
    assert metadata["padding"] == "tf-same" and metadata["network"] == "online"
    assert metadata["arch"] == "resnet50" and metadata["cifar_stem"] is False
    assert metadata["preprocessing"]["resize_interpolation"] == "bicubic"
    assert metadata["preprocessing"]["antialias"] is False
    assert (
        sum(
            v.numel()
            for k, v in state_dict.items()
            if "running" not in k and "num_batches" not in k
        )
        == 23_508_032
    )
    features = _features(state_dict, "tf-same", images)
    difference = np.abs(features - expected).max()
    scale = np.abs(expected).max()
    print(f"max |ours(tf-same) - haiku| = {difference:.3g} (features up to {scale:.3g})")
    assert difference < 1e-4


def test_symmetric_padding_does_not(haiku_release):
    path, images, expected, _, _ = haiku_release
    state_dict, _ = load_foreign(path)
    difference = np.abs(_features(state_dict, "torchvision", images) - expected).max()
    print(f"max |ours(torchvision padding) - haiku| = {difference:.3g}")
    assert difference > 1e-2


def test_online_and_target_are_selectable(haiku_release):
    path, _, _, online, target = haiku_release
    conv = "res_net50/~/block_group_1/~/block_0/~/conv_1"
    bn = "res_net50/~/block_group_3/~/block_2/~/batchnorm_2"
    for network, (params, state) in (("online", online), ("target", target)):
        state_dict, metadata = load_foreign(path, network=network)
        assert metadata["network"] == network
        expected = torch.from_numpy(params[conv]["w"]).permute(3, 2, 0, 1)
        torch.testing.assert_close(state_dict["layer2.0.conv2.weight"], expected, rtol=0, atol=0)
        torch.testing.assert_close(
            state_dict["layer4.2.bn3.running_var"],
            torch.from_numpy(state[bn + "/~/var_ema"]["average"]).flatten(),
            rtol=0,
            atol=0,
        )
        assert int(state_dict["layer4.2.bn3.num_batches_tracked"]) == 5004


def test_evaluations_build_the_export_with_its_padding(haiku_release, tmp_path):
    """An export converted from the release and the release itself, both through --ckpt's
    load_encoder: the same weights_sha256, the TF "SAME" encoder, and Haiku's features."""
    path, images, expected, _, _ = haiku_release
    export = convert(ConvertConfig(str(path), out=str(tmp_path)))
    direct, direct_meta = load_encoder(str(path))
    exported, export_meta = load_encoder(str(export))
    assert export_meta["weights_sha256"] == direct_meta["weights_sha256"]
    assert export_meta["padding"] == direct_meta["padding"] == "tf-same"
    with torch.no_grad():
        from_file, from_export = direct(images).numpy(), exported(images).numpy()
    assert np.array_equal(from_file, from_export)
    assert np.abs(from_export - expected).max() < 1e-4


def test_knn_reads_the_release_directly(haiku_release, tmp_path):
    path = haiku_release[0]
    records = tmp_path / "records"
    argv = ["--ckpt", str(path), "--dataset", "synthetic", "--image-size", "32"]
    knn.main([*argv, "--records", str(records), "--batch-size", "128", "--num-workers", "0"])
    record = only_record(records)
    checkpoint = record.checkpoint
    assert (checkpoint.source, checkpoint.method) == ("imported:byol-haiku", "byol")
    assert checkpoint.arch == "resnet50"
    assert method_name(record) == "BYOL (authors' release)"
    # The release's bicubic resize without antialiasing is recorded, and that the probe differs.
    resize = record.config["checkpoint_resize"]
    assert (resize["interpolation"], resize["antialias"], resize["honoured"]) == (
        "bicubic",
        False,
        False,
    )
