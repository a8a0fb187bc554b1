"""Presets carry the paper's (and the authors') settings; flags override them."""

import dataclasses

import pytest

from pretrain.config import RUNTIME_FIELDS, ConfigError, PretrainConfig, config_from_args
from pretrain.identity import identity_differences
from pretrain.launch import parse_args
from pretrain.presets import PRESETS, byol_r50_in1k, preset


def test_defaults_are_the_papers():
    config = PretrainConfig()
    assert (config.backbone, config.batch_size, config.epochs) == ("resnet50", 4096, 1000)
    assert (config.base_lr, config.weight_decay, config.tau_base) == (0.2, 1.5e-6, 0.996)
    assert (config.momentum, config.lars_eta, config.warmup_epochs) == (0.9, 1e-3, 10)
    assert (config.projector_hidden_dim, config.projection_dim) == (4096, 256)
    assert config.image_size == 224


@pytest.mark.parametrize(
    "epochs, lr, tau, wd",
    [(1000, 0.2, 0.996, 1.5e-6), (300, 0.3, 0.99, 1e-6), (100, 0.45, 0.99, 1e-6)],
)
def test_r50_schedules_by_length(epochs, lr, tau, wd):
    config = byol_r50_in1k(epochs)
    assert (config.epochs, config.base_lr, config.tau_base, config.weight_decay) == (
        epochs,
        lr,
        tau,
        wd,
    )


def test_unknown_lengths_and_presets_are_refused():
    with pytest.raises(ValueError, match="1000"):
        byol_r50_in1k(200)
    with pytest.raises(ValueError, match="tiny_cpu"):
        preset("nope")


def test_every_preset_builds():
    for name in PRESETS:
        assert isinstance(preset(name), PretrainConfig)


def test_cli_flags_override_the_preset():
    args = parse_args(
        [
            "--preset",
            "tiny_cpu",
            "--base-lr",
            "0.5",
            "--cifar-stem",
            "true",
            "--max-steps",
            "3",
            "--warmup-epochs",
            "0.5",
        ]
    )
    config = config_from_args(args)
    assert config.base_lr == 0.5 and config.cifar_stem is True and config.max_steps == 3
    assert config.warmup_epochs == 0.5
    assert config.dataset == "synthetic"  # untouched fields keep the preset's value


def test_config_identity_differences_ignore_runtime_fields():
    saved = dataclasses.asdict(PretrainConfig())
    changed = dataclasses.replace(PretrainConfig(), num_workers=1, max_steps=5, data="/elsewhere")
    assert identity_differences(saved, dataclasses.asdict(changed), RUNTIME_FIELDS) == []
    changed = dataclasses.replace(PretrainConfig(), tau_base=0.99)
    assert identity_differences(saved, dataclasses.asdict(changed), RUNTIME_FIELDS) == [
        "tau_base: run has 0.996, now 0.99"
    ]


def test_every_field_carries_its_help_and_the_dataclass_stays_frozen():
    for field in dataclasses.fields(PretrainConfig):
        assert field.metadata.get("help", "").strip(), f"{field.name} has no help metadata"
    with pytest.raises(dataclasses.FrozenInstanceError):
        PretrainConfig().base_lr = 1.0  # type: ignore[misc]


def help_entries(text: str) -> dict[str, str]:
    """argparse --help output -> {first option string: its whole entry, on one line}."""
    entries: dict[str, str] = {}
    flag = None
    for line in text.splitlines():
        if line.startswith("  -"):
            flag = line.split()[0].rstrip(",")
            entries[flag] = line.strip()
        elif flag and line.startswith("   "):  # the help text, on the next line(s)
            entries[flag] += " " + line.strip()
        else:
            flag = None
    return entries


def test_help_shows_every_config_flag_with_its_cited_comment_and_default(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping inside help texts
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--help"])
    assert exit_info.value.code == 0
    entries = help_entries(capsys.readouterr().out)
    for field in dataclasses.fields(PretrainConfig):
        entry = entries["--" + field.name.replace("_", "-")]
        assert field.metadata["help"] in entry
        if field.default is not None:
            assert f"(default: {field.default})" in entry
    assert "App. B: LARS 0.2; DINO: AdamW 5e-4 (default: 0.2)" in entries["--base-lr"]


def test_words_outside_a_fields_choices_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--precision", "fp8"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'fp8'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16, fp16"):
        PretrainConfig(precision="fp8")
