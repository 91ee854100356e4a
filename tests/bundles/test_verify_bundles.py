"""Bundle verification (ci/verify_bundles.py) on every folder in bundles/, plus bad-input runs of the real configs.

Per bundle (parametrized over bundles/*): a. required files, b. metadata vs. medattn_networks/zoo/meta_schema.json, c. logging.conf,
d. network in/out vs. metadata, e. train / evaluate / infer workflows on generated data in the dataset's published
layout, f. TorchScript export. g. is the 2-process torchrun training. Small per-bundle settings: ci/bundle_test_settings.json.

The checks are also exercised against broken copies of a bundle (so that they can fail), and the inference
config is run as a user would (``python -m monai.bundle run`` in a subprocess) on missing, empty and bad inputs.
Every output goes to pytest's temporary folders; nothing under bundles/ is written.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "ci"))

import verify_bundles as vb  # noqa: E402

from medattn_networks.data import make_brats_cases, make_nifti_folder  # noqa: E402

BUNDLES = vb.list_bundles()
HIPPOCAMPUS = "pam_unet3d_hippocampus"


def test_bundles_found():
    assert HIPPOCAMPUS in BUNDLES, f"bundles/ lists {BUNDLES}"


# ----------------------------------------------------------------------------------- a-d: static checks
@pytest.mark.parametrize("bundle", BUNDLES)
def test_required_files(bundle):
    vb.check_required_files(vb.bundle_path(bundle))


@pytest.mark.parametrize("bundle", BUNDLES)
def test_metadata(bundle):
    meta = vb.check_metadata(vb.bundle_path(bundle))
    assert meta["name"] == bundle


@pytest.mark.parametrize("bundle", BUNDLES)
def test_logging_conf(bundle):
    vb.check_logging_conf(vb.bundle_path(bundle))


@pytest.mark.parametrize("bundle", BUNDLES)
def test_settings_entry(bundle):
    settings = vb.load_settings(bundle)  # every bundle needs an entry in ci/bundle_test_settings.json
    assert settings["layout"] in vb.LAYOUTS
    for variant in settings.get("variants", {}):
        assert vb.variant_settings(settings, variant)["layout"] in vb.LAYOUTS


@pytest.mark.parametrize("bundle", BUNDLES)
def test_net_in_out(bundle):
    shapes = vb.check_net_in_out(vb.bundle_path(bundle), vb.load_settings(bundle))
    assert set(shapes) == {"train.json", "inference.json"}


# ------------------------------------------------------------------------------------- e-f: workflows
class _TrainedBundles:
    """Trains each bundle once per session (its data and checkpoint are shared by the workflow tests)."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self.factory = factory
        self.done: dict[str, dict] = {}

    def get(self, bundle: str) -> dict:
        if bundle not in self.done:
            root = self.factory.mktemp(f"train_{bundle}")
            settings = vb.load_settings(bundle)
            data = vb.make_training_data(settings, root / "data")
            workflow = vb.run_training(vb.bundle_path(bundle), settings, data, root / "ckpt", root / "train_out")
            self.done[bundle] = {
                "settings": settings,
                "data": data,
                "ckpt": root / "ckpt" / "model.pt",
                "epochs": workflow.parser.get_parsed_content("train#trainer").state.epoch,
            }
        return self.done[bundle]


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> _TrainedBundles:
    return _TrainedBundles(tmp_path_factory)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_train_workflow(bundle, trained):
    result = trained.get(bundle)  # ConfigWorkflow(train): initialize, check_properties() == [], run, finalize
    assert result["ckpt"].is_file()
    assert result["epochs"] == result["settings"]["train_overrides"]["epochs"]


@pytest.mark.parametrize("bundle", BUNDLES)
def test_evaluate_workflow(bundle, trained, tmp_path):
    result = trained.get(bundle)
    metrics = vb.run_evaluation(vb.bundle_path(bundle), result["settings"], result["data"], result["ckpt"], tmp_path / "eval")
    assert 0.0 <= metrics["val_mean_dice"] <= 1.0
    raw = list(csv.reader(open(tmp_path / "eval" / "val_mean_dice_raw.csv")))
    overrides = result["settings"]["train_overrides"]
    assert len(raw) - 1 == (len(overrides["val_cases"]) if "val_cases" in overrides else overrides["num_val"]), raw
    channel_def = vb.bundle_parser(vb.bundle_path(bundle), "train.json").get("_meta_")["network_data_format"]["outputs"]["pred"]["channel_def"]
    foreground = [channel_def[str(i)] for i in range(1, len(channel_def))]
    assert raw[0] == ["filename", *foreground, "mean"]  # classes by name, as metadata's channel_def (no background)
    summary = list(csv.reader(open(tmp_path / "eval" / "val_hd95_summary.csv")))
    assert [row[0] for row in summary[1:]] == [*foreground, "mean"]


@pytest.mark.parametrize("bundle", BUNDLES)
def test_infer_workflow(bundle, trained, tmp_path):
    result = trained.get(bundle)
    bundle_dir = vb.bundle_path(bundle)
    in_channels = vb.check_metadata(bundle_dir)["network_data_format"]["inputs"]["image"]["num_channels"]
    inputs = vb.make_inference_inputs(result["settings"], tmp_path / "in", in_channels)
    vb.run_inference(bundle_dir, result["settings"], tmp_path / "in", result["ckpt"], tmp_path / "out")
    outputs = vb.check_inference_outputs(bundle_dir, result["settings"], inputs, tmp_path / "out")
    assert len(outputs) == len(inputs) >= 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in outputs)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_weightless_inference(bundle, trained, tmp_path):
    """The model zoo's own weightless test: handlers#0#_disabled_ with no weights file anywhere."""
    result = trained.get(bundle)
    bundle_dir = vb.bundle_path(bundle)
    in_channels = vb.check_metadata(bundle_dir)["network_data_format"]["inputs"]["image"]["num_channels"]
    inputs = vb.make_inference_inputs(result["settings"], tmp_path / "in", in_channels)
    vb.run_weightless_inference(bundle_dir, result["settings"], tmp_path / "in", tmp_path / "out")
    assert len(vb.check_inference_outputs(bundle_dir, result["settings"], inputs, tmp_path / "out")) == len(inputs)
    assert not (tmp_path / "no_weights_here").exists()


@pytest.mark.parametrize("bundle", BUNDLES)
def test_configs_are_zoo_formatted(bundle):
    assert vb.check_config_format(vb.bundle_path(bundle)) >= 5


def test_unformatted_config_is_reported_and_fixed(bundle_copy):
    path = bundle_copy / "configs" / "inference.json"
    path.write_text(path.read_text().rstrip("\n").replace("    ", "  "))
    with pytest.raises(vb.BundleCheckError, match="inference.json not formatted as pretty-format-json"):
        vb.check_config_format(bundle_copy)
    vb.check_config_format(bundle_copy, fix=True)
    assert path.read_text().endswith("}\n") and vb.check_config_format(bundle_copy) >= 5


@pytest.mark.parametrize("bundle", BUNDLES)
def test_torchscript(bundle, trained, tmp_path):
    result = trained.get(bundle)
    bundle_dir = vb.bundle_path(bundle)
    script = vb.export_torchscript(bundle_dir, result["settings"], result["ckpt"], tmp_path)
    print(f"{bundle}: {script.summary()}")
    if script.scriptable:
        assert script.max_abs_diff <= vb.TORCHSCRIPT_ATOL
        assert Path(script.ts_file).is_file()
    else:
        # allowed only when docs/README.md explains it under a "TorchScript" heading
        assert script.summary().startswith("not scriptable: ")
        vb.check_torchscript_documented(bundle_dir, script)


# further layouts of a bundle (e.g. dsnet_fcn_r50_synapse on raw BTCV NIfTI): train + evaluate on generated data
def _variants() -> list[tuple[str, str]]:
    pairs = []
    for bundle in BUNDLES:
        try:
            settings = vb.load_settings(bundle)
        except vb.BundleCheckError:  # reported by test_settings_entry; collection must not fail
            continue
        pairs += [(bundle, variant) for variant in settings.get("variants", {})]
    return pairs


VARIANTS = _variants()


@pytest.mark.parametrize("bundle, variant", VARIANTS, ids=[f"{b}-{v}" for b, v in VARIANTS])
def test_layout_variant_workflows(bundle, variant, tmp_path):
    settings = vb.variant_settings(vb.load_settings(bundle), variant)
    data = vb.make_training_data(settings, tmp_path / "data")
    vb.run_training(vb.bundle_path(bundle), settings, data, tmp_path / "ckpt", tmp_path / "train_out")
    metrics = vb.run_evaluation(vb.bundle_path(bundle), settings, data, tmp_path / "ckpt" / "model.pt", tmp_path / "eval")
    assert 0.0 <= metrics["val_mean_dice"] <= 1.0
    raw = list(csv.reader(open(tmp_path / "eval" / "val_mean_dice_raw.csv")))
    assert len(raw) - 1 == settings["train_overrides"]["num_val"], raw


# -------------------------------------------------------------------------------------------- g: dist
def test_dist_training(tmp_path):
    ckpt = vb.run_dist_training(tmp_path)  # torchrun, 2 CPU processes, gloo
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state and not any(k.startswith("module.") for k in state)


# ------------------------------------------------------------------------------ the checks can fail
@pytest.fixture
def bundle_copy(tmp_path) -> Path:
    """A copy of the hippocampus bundle (configs, docs, LICENSE; no weights) to break."""
    src = vb.bundle_path(HIPPOCAMPUS)
    dst = tmp_path / HIPPOCAMPUS
    shutil.copytree(src / "configs", dst / "configs")
    (dst / "docs").mkdir()
    for name in ("LICENSE", "docs/README.md"):
        if (src / name).is_file():
            shutil.copy(src / name, dst / name)
        else:  # the real bundle is checked by test_required_files; the copy only needs the files to exist
            (dst / name).write_text("placeholder\n")
    return dst


def _edit_meta(bundle_dir: Path, edit) -> None:
    path = bundle_dir / "configs" / "metadata.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta, indent=4))


def test_copy_passes_static_checks(bundle_copy):
    vb.check_required_files(bundle_copy)
    vb.check_metadata(bundle_copy)
    vb.check_logging_conf(bundle_copy)


@pytest.mark.parametrize("missing", ["LICENSE", "docs/README.md", "configs/multi_gpu_train.json", "configs/logging.conf"])
def test_missing_file_is_reported(bundle_copy, missing):
    (bundle_copy / missing).unlink()
    with pytest.raises(vb.BundleCheckError, match=f"\\[{HIPPOCAMPUS}\\] files: missing {missing}"):
        vb.check_required_files(bundle_copy)


def test_broken_json_is_reported(bundle_copy):
    (bundle_copy / "configs" / "evaluate.json").write_text('{"run": [}')
    with pytest.raises(vb.BundleCheckError, match="evaluate.json is not valid JSON"):
        vb.check_required_files(bundle_copy)


def _set_version(version, changelog):
    def edit(meta):
        meta["version"] = version
        meta["changelog"] = {v: "change" for v in changelog}

    return edit


@pytest.mark.parametrize(
    "edit, message",
    [
        (_set_version("0.2.0", ["0.1.0"]), "version 0.2.0 is not a key of changelog"),
        (_set_version("0.9.0", ["0.10.0", "0.9.0"]), r"version 0.9.0 is not the highest changelog entry \(0.10.0\)"),
        (_set_version("1.0", ["1.0"]), "version: '1.0' does not match"),
        (lambda m: m.update(name="other_name"), "name 'other_name' differs from the folder name"),
        (lambda m: m.pop("intended_use"), "'intended_use' is a required property"),
        (lambda m: m.pop("required_packages_version"), "'required_packages_version' is a required property"),
        (lambda m: m["network_data_format"]["inputs"]["image"].pop("modality"), "'modality' is a required property"),
        (lambda m: m["network_data_format"]["outputs"]["pred"].pop("is_patch_data"), "'is_patch_data' is a required"),
        (lambda m: m["network_data_format"]["outputs"]["pred"].update(num_channels=4), "channel_def has keys"),
        (lambda m: m["network_data_format"]["inputs"]["image"].update(num_channels="1"), "'1' is not of type 'integer'"),
    ],
)
def test_bad_metadata_is_reported(bundle_copy, edit, message):
    _edit_meta(bundle_copy, edit)
    with pytest.raises(vb.BundleCheckError, match=message) as info:
        vb.check_metadata(bundle_copy)
    assert str(info.value).startswith(f"[{HIPPOCAMPUS}] metadata: ")


def test_versions_compare_as_numbers(bundle_copy):
    _edit_meta(bundle_copy, _set_version("0.10.0", ["0.9.0", "0.10.0", "0.2.1"]))
    assert vb.check_metadata(bundle_copy)["version"] == "0.10.0"


def test_bad_logging_conf_is_reported(bundle_copy):
    path = bundle_copy / "configs" / "logging.conf"
    path.write_text(path.read_text().replace("class=StreamHandler", "class=NoSuchHandler"))
    with pytest.raises(vb.BundleCheckError, match="logging"):
        vb.check_logging_conf(bundle_copy)


def test_net_mismatch_with_metadata_is_reported(bundle_copy):
    _edit_meta(bundle_copy, lambda m: m["network_data_format"]["outputs"]["pred"].update(num_channels=2, channel_def={"0": "a", "1": "b"}))
    with pytest.raises(vb.BundleCheckError, match="3 output channels, metadata outputs.pred says 2"):
        vb.check_net_in_out(bundle_copy, vb.load_settings(HIPPOCAMPUS))


NON_SCRIPTABLE_NET = '''
import torch
import torch.nn as nn


def _expand_to(weights, x):
    return weights.view(*weights.shape, *([1] * (x.dim() - weights.dim())))


class GatedHead(nn.Module):
    def __init__(self, in_channels=1, out_channels=3):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, 1)

    def forward(self, x):
        y = self.conv(x)
        return y * _expand_to(torch.sigmoid(y.mean((2, 3, 4))), y)
'''


def test_not_scriptable_is_reported_and_must_be_documented(bundle_copy, tmp_path, monkeypatch):
    (tmp_path / "nonscript_net.py").write_text(NON_SCRIPTABLE_NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    train = bundle_copy / "configs" / "train.json"
    config = json.loads(train.read_text())
    config["network_def"] = {"_target_": "nonscript_net.GatedHead", "in_channels": "@in_channels", "out_channels": "@num_classes"}
    train.write_text(json.dumps(config, indent=4))
    import nonscript_net

    ckpt = tmp_path / "model.pt"
    torch.save(nonscript_net.GatedHead(1, 3).state_dict(), ckpt)
    result = vb.export_torchscript(bundle_copy, vb.load_settings(HIPPOCAMPUS), ckpt, tmp_path / "ts")
    assert not result.scriptable
    assert result.summary().startswith("not scriptable: RuntimeError: cannot statically infer the expected size of a list")
    assert "_expand_to" in result.names and "GatedHead" in result.names
    assert "use_trace" in result.trace_note  # the tracing fallback is tried and reported

    readme = bundle_copy / "docs" / "README.md"
    readme.write_text("# Toy\n\nNo word on scripting.\n")
    with pytest.raises(vb.BundleCheckError, match="no 'TorchScript' heading"):
        vb.check_torchscript_documented(bundle_copy, result)
    readme.write_text("# Toy\n\n## TorchScript\n\nExport works fine.\n\n## Other\n\nnot scriptable\n")
    with pytest.raises(vb.BundleCheckError, match="does not say the network is not scriptable"):
        vb.check_torchscript_documented(bundle_copy, result)
    readme.write_text("# Toy\n\n## TorchScript\n\nThe network is not scriptable (a reason we do not give).\n")
    with pytest.raises(vb.BundleCheckError, match="names none of"):
        vb.check_torchscript_documented(bundle_copy, result)
    readme.write_text(
        "# Toy\n\n## Export\n\n### TorchScript\n\nThe network is not scriptable: `_expand_to` unpacks a list of "
        "unknown length. Use `ckpt_export --use_trace True`.\n"
    )
    assert "_expand_to" in vb.check_torchscript_documented(bundle_copy, result)


# ------------------------------------------------------------------- bad inputs, as a user runs the bundle
SMALL = {
    HIPPOCAMPUS: ["--roi_size", "[16,24,16]"],
    "pam_unet3d_brats": ["--roi_size", "[16,24,24]", "--crop_start", "[2,4,4]"],
}


def run_inference_cli(bundle: str, dataset_dir: Path, output_dir: Path, *extra: str) -> tuple[int, str]:
    """``python -m monai.bundle run --config_file configs/inference.json`` from the bundle folder; (rc, output)."""
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
        "--dataset_dir", str(dataset_dir), "--output_dir", str(output_dir), "--num_workers", "0", *SMALL[bundle], *extra,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, cwd=vb.bundle_path(bundle), env=env, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def _last_line(out: str) -> str:
    assert "Traceback" not in out, out[-3000:]
    return [line for line in out.splitlines() if line.strip()][-1]


def _random_weights(tmp_path: Path) -> list[str]:
    return ["--load_pretrain", "False", "--ckpt_path", str(tmp_path / "no_weights.pt")]


def test_cli_missing_input_folder(tmp_path):
    missing = tmp_path / "no_such_folder"
    rc, out = run_inference_cli(HIPPOCAMPUS, missing, tmp_path / "out", *_random_weights(tmp_path))
    assert rc == 2
    assert _last_line(out) == f"error: input folder not found: '{missing}' is not a directory", out[-3000:]


def test_cli_empty_input_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    rc, out = run_inference_cli(HIPPOCAMPUS, empty, tmp_path / "out", *_random_weights(tmp_path))
    assert rc == 3  # no usable input
    assert _last_line(out).startswith("error: no .nii or .nii.gz files") and f"in input folder '{empty}'" in out, out[-3000:]


def test_cli_missing_weights(tmp_path):
    make_nifti_folder(tmp_path / "in", 1)
    ckpt = tmp_path / "missing" / "model.pt"
    rc, out = run_inference_cli(HIPPOCAMPUS, tmp_path / "in", tmp_path / "out", "--ckpt_path", str(ckpt))
    assert rc == 2
    assert _last_line(out).startswith(f"error: no weights at '{ckpt}'") and "--load_pretrain" in out, out[-3000:]
    assert not (tmp_path / "out").exists()  # stopped before anything was written


def test_cli_weights_that_do_not_fit(tmp_path):
    import torch

    make_nifti_folder(tmp_path / "in", 1)
    ckpt = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(3)}, ckpt)
    rc, out = run_inference_cli(HIPPOCAMPUS, tmp_path / "in", tmp_path / "out", "--ckpt_path", str(ckpt))
    assert rc == 2
    line = _last_line(out)
    assert line.startswith(f"error: weights in '{ckpt}' do not fit the configured network: ") and "'encoder.weight'" in line, out[-3000:]


@pytest.mark.parametrize("where", ["under_a_file", "read_only"])
def test_cli_output_folder_not_writable(tmp_path, where):
    make_nifti_folder(tmp_path / "in", 1)
    if where == "under_a_file":
        (tmp_path / "a_file").write_text("x")
        out_dir = tmp_path / "a_file" / "out"
    else:
        readonly = tmp_path / "ro"
        readonly.mkdir()
        readonly.chmod(0o555)
        out_dir = readonly / "out" if os.geteuid() != 0 else Path("/proc/medattn_out")  # root ignores mode bits
    rc, out = run_inference_cli(HIPPOCAMPUS, tmp_path / "in", out_dir, *_random_weights(tmp_path))
    assert rc == 2
    assert _last_line(out).startswith(f"error: output folder '{out_dir}' is not writable"), out[-3000:]
    assert "done" not in out  # checked before any input was segmented


def test_cli_killed_inference_leaves_no_partial_output_and_skip_existing_resumes(tmp_path):
    import signal
    import time

    folder, out_dir = tmp_path / "in", tmp_path / "out"
    make_nifti_folder(folder, 8, shape=(48, 56, 40))
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json", "--dataset_dir", str(folder),
        "--output_dir", str(out_dir), "--num_workers", "0", *SMALL[HIPPOCAMPUS], *_random_weights(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=vb.bundle_path(HIPPOCAMPUS), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not list(out_dir.glob("*_seg.nii.gz")) if out_dir.is_dir() else True:
        assert proc.poll() is None and time.time() < deadline, "inference ended before its first output"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = {p.name: p.stat().st_mtime_ns for p in out_dir.glob("*_seg.nii.gz")}
    assert 1 <= len(first) < 8
    for name in first:  # whatever sits under a final name is a whole label map
        assert nib.load(str(out_dir / name)).get_fdata().shape == (48, 56, 40)
    rc, out = run_inference_cli(HIPPOCAMPUS, folder, out_dir, *_random_weights(tmp_path), "--skip_existing", "true")
    assert rc == 0, out[-3000:]
    assert f"{len(first)} input(s) in {folder} already segmented" in out
    after = {p.name: p.stat().st_mtime_ns for p in out_dir.glob("*_seg.nii.gz")}
    assert sorted(after) == [f"image_{i}_seg.nii.gz" for i in range(8)]
    assert all(after[name] == mtime for name, mtime in first.items())  # not segmented again


def test_cli_lower_case_false_turns_the_weights_off(tmp_path):
    """``--load_pretrain false`` reaches the config as the string "false": it must still mean false."""
    make_nifti_folder(tmp_path / "in", 1, shape=(24, 28, 20))
    missing = tmp_path / "no_weights.pt"
    rc, out = run_inference_cli(HIPPOCAMPUS, tmp_path / "in", tmp_path / "out", "--load_pretrain", "false", "--ckpt_path", str(missing))
    assert rc == 0, out[-3000:]
    assert [p.name for p in (tmp_path / "out").glob("*.nii.gz")] == ["image_0_seg.nii.gz"]


def test_cli_unknown_switch_value_is_named(tmp_path):
    make_nifti_folder(tmp_path / "in", 1, shape=(24, 28, 20))
    rc, out = run_inference_cli(HIPPOCAMPUS, tmp_path / "in", tmp_path / "out", "--load_pretrain", "maybe")
    assert rc != 0
    assert "'load_pretrain' must be true or false, got 'maybe'" in out, out[-3000:]
    assert not list((tmp_path / "out").glob("*.nii.gz"))


def test_cli_bad_files_are_skipped(tmp_path):
    folder = tmp_path / "in"
    make_nifti_folder(folder, 2, shape=(24, 28, 20))  # image_0, image_1: good
    good = (folder / "image_0.nii.gz").read_bytes()
    (folder / "truncated.nii.gz").write_bytes(good[: len(good) // 2])
    (folder / "garbage.nii").write_bytes(b"this is not a NIfTI file\n" * 40)
    nib.save(nib.Nifti1Image(np.ones((24, 28, 20, 2), np.float32), np.eye(4)), str(folder / "two_channels.nii.gz"))
    out_dir = tmp_path / "out"
    rc, out = run_inference_cli(HIPPOCAMPUS, folder, out_dir, *_random_weights(tmp_path))
    assert rc == 4, out[-3000:]  # finished, some inputs skipped
    assert "3 input(s) skipped, listed in" in out
    written = sorted(p.name for p in out_dir.glob("*.nii.gz"))
    assert written == ["image_0_seg.nii.gz", "image_1_seg.nii.gz"]
    with open(out_dir / "skipped_inputs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    problems = {Path(r["file"]).name: r["problem"] for r in rows}
    assert set(problems) == {"truncated.nii.gz", "garbage.nii", "two_channels.nii.gz"}, rows
    assert "truncated" in problems["truncated.nii.gz"]
    assert "not a readable NIfTI file" in problems["garbage.nii"]
    assert "expected 1 channel(s), found 2" in problems["two_channels.nii.gz"]
    for name, problem in problems.items():  # the user sees each one in the log too
        assert f"{folder / name}: {problem}; skipped" in out, out[-3000:]


def test_cli_brats_wrong_channel_count_is_skipped(tmp_path):
    folder = tmp_path / "in"
    make_brats_cases(folder, 1, shape=(32, 32, 24), grades=(), with_label=False)
    case = next(p.name for p in folder.iterdir() if p.is_dir())
    single = folder / "t1_only.nii.gz"  # a plain 3D file: 1 channel where the network needs 4
    nib.save(nib.Nifti1Image(np.ones((32, 32, 24), np.float32), np.eye(4)), str(single))
    out_dir = tmp_path / "out"
    rc, out = run_inference_cli("pam_unet3d_brats", folder, out_dir, *_random_weights(tmp_path))
    assert rc == 4, out[-3000:]  # finished, one input skipped
    assert sorted(p.name for p in out_dir.glob("*.nii.gz")) == [f"{case}_seg.nii.gz"]
    assert f"{single}: expected 4 channel(s), found 1" in out, out[-3000:]
    rows = list(csv.DictReader(open(out_dir / "skipped_inputs.csv", newline="")))
    assert [(Path(r["file"]).name, "expected 4 channel(s), found 1" in r["problem"]) for r in rows] == [("t1_only.nii.gz", True)]


# ---------------------------------------------------------------------------------------------- CLI
def test_verifier_cli_static(tmp_path):
    """The CLI prints each check and exits 0 (here: checks a-d of one bundle) or non-zero naming the problem."""
    cmd = [sys.executable, str(REPO_ROOT / "ci" / "verify_bundles.py"), "--static", "pam_vnet_brats"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for check in ("files", "metadata", "logging", "net"):
        assert f"[pam_vnet_brats] {check}" in proc.stdout
    bad = subprocess.run(
        [sys.executable, str(REPO_ROOT / "ci" / "verify_bundles.py"), "--static", "no_such_bundle"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode != 0 and "unknown bundle(s): no_such_bundle" in bad.stderr
