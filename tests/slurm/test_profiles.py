"""Profiles: the shipped ones load; bad ones are refused with a sentence that says what to do."""

import importlib
from types import SimpleNamespace

import pytest

from slurm import submit as slurm_submit
from slurm.profile import ProfileError, known_profiles, load_profile, parse_time


def test_shipped_profiles_load():
    assert {"local", "example"} <= set(known_profiles())
    local = load_profile("local")
    assert (local.partition, local.time_min, local.gpus_per_node, local.tasks) == (
        "debug",
        30,
        0,
        1,
    )
    example = load_profile("example")
    assert example.gpus_per_node == 8 and example.tasks == 8  # one task (DDP rank) per GPU
    assert example.extra == {"exclusive": True, "mail-type": "END,FAIL"}


def test_overrides_replace_file_values():
    profile = load_profile("example", nodes=4, time=90, tasks_per_node=None)
    assert (profile.nodes, profile.time_min, profile.partition) == (4, 90, "gpu")


@pytest.mark.parametrize(
    "text, minutes",
    [(90, 90), ("90", 90), ("1:30:00", 90), ("2-00:00:00", 2880), ("1-12", 2160), ("0:30", 1)],
)
def test_parse_time(text, minutes):
    assert parse_time(text) == minutes


@pytest.mark.parametrize("text", ["", "1h", "0", "-5", "1:2:3:4"])
def test_parse_time_refuses_garbage(text):
    with pytest.raises(ProfileError, match="not a SLURM time limit"):
        parse_time(text)


def test_unknown_profile_names_the_known_ones_and_the_template():
    with pytest.raises(ProfileError) as error:
        load_profile("no-such-site")
    assert "unknown SLURM profile 'no-such-site'" in str(error.value)
    assert "local" in str(error.value) and "example.toml" in str(error.value)


def test_missing_required_fields_are_named(tmp_path):
    path = tmp_path / "site.toml"
    path.write_text('account = "abc"\n')
    with pytest.raises(ProfileError, match="lacks the required fields partition, time, shared_dir"):
        load_profile(str(path))


def test_unknown_field_and_wrong_type_are_refused(tmp_path):
    path = tmp_path / "site.toml"
    path.write_text('partition = "p"\ntime = 60\nshared_dir = "/s"\ngpus = 4\n')
    with pytest.raises(ProfileError, match=r"unknown fields \['gpus'\]"):
        load_profile(str(path))
    path.write_text('partition = "p"\ntime = 60\nshared_dir = "/s"\nnodes = "two"\n')
    with pytest.raises(ProfileError, match="nodes = 'two' should be of type int"):
        load_profile(str(path))


def test_invalid_toml_is_reported(tmp_path):
    path = tmp_path / "site.toml"
    path.write_text("partition = \n")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile(str(path))


def _submitted_profile(monkeypatch, module_main, *flags):
    """The profile a one-process CLI hands to slurm.submit.submit (nothing is submitted)."""
    submitted = {}

    def submit(profile, fn, command, name, folder=None, after=()):
        submitted.update(profile=profile, command=command)
        return SimpleNamespace(job_id="42", paths=SimpleNamespace(stdout="out", stderr="err"))

    monkeypatch.setattr(slurm_submit, "submit", submit)
    module_main(["--ckpt", "x.pt", "--slurm", "--profile", "example", *flags])
    return submitted["profile"]


ONE_PROCESS_CLIS = [
    "evaluate.linear",
    "evaluate.knn",
    "transfer.detection.cli",
    "transfer.segmentation.cli",
    "transfer.depth.cli",
]


@pytest.mark.parametrize("module", ONE_PROCESS_CLIS)
def test_one_process_clis_submit_one_task_on_a_multi_gpu_profile(monkeypatch, capsys, module):
    """The example profile has 8 GPUs (8 DDP tasks); a linear probe must run once, on one GPU."""
    main = importlib.import_module(module).main
    profile = _submitted_profile(monkeypatch, main)
    assert (profile.nodes, profile.tasks, profile.gpus_per_node) == (1, 1, 1)
    assert profile.partition == "gpu"  # the rest of the profile is kept
    # one GPU's share of the node (480 GB / 8), and not the whole node (`exclusive` dropped)
    assert profile.mem_gb == 60 and "exclusive" not in profile.extra
    assert _submitted_profile(monkeypatch, main, "--mem-gb", "100").mem_gb == 100
    assert "submitted SLURM job 42" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="runs in one process"):
        _submitted_profile(monkeypatch, main, "--tasks-per-node", "8")
