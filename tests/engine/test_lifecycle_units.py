"""Units of the bundle life cycle: atomic checkpoints, run folders, resume checks, weights that do not fit, override
checks, one-line error reporting, the folder segmenter that survives bad inputs."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events

from medattn_networks.engine import (
    BestModelSaver,
    FolderSegmenter,
    SkipOnErrorDataset,
    TrainingStateSaver,
    atomic_save,
    load_weights,
    require_writable,
    resume_checkpoint,
    run_folder,
)
from medattn_networks.engine.runtime import bundle_error_in, check_overrides, cli_overrides
from medattn_networks.errors import ConfigError, MissingPathError, OutputNotWritableError, WeightsError

REPO_ROOT = Path(__file__).resolve().parents[2]
HIPPOCAMPUS = REPO_ROOT / "bundles" / "pam_unet3d_hippocampus"


def test_atomic_save_killed_midway_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    atomic_save({"w": torch.ones(3)}, path)

    def dies_midway(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # as a kill would stop it

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left


def _engine(epoch: int, max_epochs: int = 10) -> Engine:
    engine = Engine(lambda e, b: None)
    engine.state.epoch, engine.state.max_epochs, engine.state.epoch_length, engine.state.iteration = epoch, max_epochs, 3, 3 * epoch
    return engine


def test_state_saver_keeps_n_and_removes_old_only_after_the_new_is_complete(tmp_path, monkeypatch):
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    saver = TrainingStateSaver(tmp_path, {"model": net, "optimizer": opt}, n_saved=2)
    for epoch in (1, 2, 3):
        saver.save_state(_engine(epoch))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state_epoch2.pt", "state_epoch3.pt"]
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        saver.save_state(_engine(4))
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state_epoch2.pt", "state_epoch3.pt"]
    state = torch.load(tmp_path / "state_epoch3.pt", weights_only=True)
    assert set(state) == {"model", "optimizer"}


def test_best_model_saver_remembers_the_best_across_a_resume(tmp_path):
    net = torch.nn.Linear(2, 2)
    engine = _engine(1)
    engine.state.metrics = {"val_mean_dice": 0.5}
    BestModelSaver(tmp_path, net, "val_mean_dice")(engine)
    first = (tmp_path / "model.pt").read_bytes()
    with torch.no_grad():
        net.weight.add_(1.0)
    resumed = BestModelSaver(tmp_path, net, "val_mean_dice")  # a new process reads best.json
    engine.state.epoch, engine.state.metrics = 2, {"val_mean_dice": 0.4}
    resumed(engine)
    assert (tmp_path / "model.pt").read_bytes() == first
    engine.state.epoch, engine.state.metrics = 3, {"val_mean_dice": 0.6}
    resumed(engine)
    record = json.loads((tmp_path / "best.json").read_text())
    assert (record["epoch"], record["value"]) == (3, 0.6) and (tmp_path / "model.pt").read_bytes() != first


def test_run_folder_and_resume_checks(tmp_path):
    runs = tmp_path / "runs"
    fresh = Path(run_folder(runs))
    assert fresh.parent == runs and not fresh.exists()
    with pytest.raises(MissingPathError, match="nothing to resume"):
        run_folder(runs, resume=True)
    older, newer = runs / "20260101-000000", runs / "20260102-000000"
    for folder in (older, newer):
        folder.mkdir(parents=True)
    (runs / "20260103-000000").mkdir()  # no state inside: not resumable
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    engine = _engine(2)
    for folder in (older, newer):
        TrainingStateSaver(folder, {"model": net, "optimizer": opt, "trainer": engine}).save_state(engine)
    assert run_folder(runs, resume="true") == str(newer)
    assert resume_checkpoint(newer, resume=True) == str(newer / "state_epoch2.pt")
    assert resume_checkpoint(newer) is None
    torch.save(net.state_dict(), tmp_path / "model_only.pt")
    with pytest.raises(WeightsError, match="holds no model, optimizer, trainer state"):
        resume_checkpoint(newer, resume_from=str(tmp_path / "model_only.pt"))
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="not a readable checkpoint"):
        resume_checkpoint(newer, resume_from=str(tmp_path / "broken.pt"))


def test_weights_that_do_not_fit_name_the_file_and_the_key(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3), torch.nn.Conv3d(4, 2, 1))
    other = torch.nn.Sequential(torch.nn.Conv3d(1, 8, 3), torch.nn.Conv3d(8, 2, 1))
    torch.save(other.state_dict(), tmp_path / "other.pt")
    with pytest.raises(WeightsError) as info:
        load_weights(net, tmp_path / "other.pt")
    message = str(info.value)
    assert f"'{tmp_path / 'other.pt'}'" in message and "'0.weight' is [8, 1, 3, 3, 3] in the file but [4, 1, 3, 3, 3]" in message
    assert "\n" not in message and len(message) < 400
    torch.save({"model": net.state_dict(), "optimizer": {}}, tmp_path / "ckpt.pt")  # a training checkpoint
    load_weights(net, tmp_path / "ckpt.pt")
    with pytest.raises(WeightsError, match="no weights at"):
        load_weights(net, tmp_path / "absent.pt")


def test_require_writable(tmp_path):
    target = tmp_path / "a" / "b"
    assert require_writable(target) == str(target) and not target.exists()  # proven writable, not created
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputNotWritableError, match="is not writable"):
        require_writable(tmp_path / "file" / "out")
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o555)
    folder = readonly if os.geteuid() != 0 else Path("/proc/medattn_output")  # root ignores permission bits
    try:
        with pytest.raises(OutputNotWritableError, match="is not writable"):
            require_writable(folder)
    finally:
        readonly.chmod(0o755)


def test_cli_overrides_are_parsed_as_fire_does():
    positionals, options = cli_overrides(["run", "training", "--config_file", "configs/train.json", "--epochs=3", "--amp", "--roi_size", "[1, 2]"])
    assert positionals == ["run", "training"]
    assert options == {"config_file": "configs/train.json", "epochs": 3, "amp": True, "roi_size": [1, 2]}


def test_override_check(monkeypatch):
    monkeypatch.chdir(HIPPOCAMPUS)
    base = {"config_file": "configs/train.json", "meta_file": "configs/metadata.json"}
    check_overrides({**base, "epochs": 1, "train#trainer#max_epochs": 2, "network_def#channels": [1], "train#handlers#0#_disabled_": True, "_meta_#version": "x"})
    with pytest.raises(ConfigError, match=r"unknown override --num_epochs: .*did you mean '--epochs'\?"):
        check_overrides({**base, "num_epochs": 1})
    with pytest.raises(ConfigError, match="did you mean '--network_def#channels'"):
        check_overrides({**base, "network_def#chanels": [1]})
    check_overrides({**base, "tracking": "mlflow", "experiment_name": "x", "tracking_uri": "sqlite:///x.db"})
    inference = {"config_file": "configs/inference.json"}
    check_overrides({**inference, "handlers#0#_disabled_": True, "dataset_dir": "x", "debug": True})
    with pytest.raises(ConfigError, match="did you mean '--output_dir'"):
        check_overrides({**inference, "ouput_dir": "x"})


def test_bundle_error_found_under_monai_wrapping():
    try:
        try:
            raise MissingPathError("input folder not found: 'x'")
        except Exception as e:
            raise RuntimeError("Failed to evaluate ConfigExpression") from e
    except RuntimeError as outer:
        assert str(bundle_error_in(outer)) == "input folder not found: 'x'"
    assert bundle_error_in(RuntimeError("a bug")) is None
    assert bundle_error_in(ValueError("raised outside the package")) is None


def test_one_line_error_and_exit_code_from_the_command_line(tmp_path):
    code = (
        "import sys, runpy; sys.argv = ['x']; "
        "import medattn_networks.engine.runtime as r; r.start_run(['run']); "
        "from medattn_networks.errors import NoUsableInputError; "
        "raise RuntimeError('Failed to evaluate') from NoUsableInputError('no scans in folder /data')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "MEDATTN_DEBUG": ""})
    assert out.returncode == 3
    assert out.stderr.strip().splitlines()[-1] == "error: no scans in folder /data" and "Traceback" not in out.stderr


class _Identity(torch.nn.Module):
    def forward(self, x):
        if float(x.mean()) > 100:
            raise RuntimeError("CUDA out of memory. Tried to allocate 9 GiB")
        return x


def test_folder_segmenter_reports_and_survives_bad_inputs(tmp_path):
    def load(item):
        if item["image"] == "unreadable":
            raise ValueError("pixel type RGB not supported")
        return {"image": torch.full((1, 4, 4, 4), float(item["value"]))}

    data = [{"image": "a", "value": 1}, {"image": "unreadable", "value": 0}, {"image": "huge", "value": 1000}, {"image": "b", "value": 2}]
    dataset = SkipOnErrorDataset(data, transform=load)
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, collate_fn=lambda b: {k: ([v[k] for v in b] if isinstance(b[0][k], str) else torch.stack([v[k] for v in b])) for k in b[0]})
    seen = []
    segmenter = FolderSegmenter(device="cpu", val_data_loader=loader, network=_Identity(), report_dir=tmp_path, decollate=False)
    segmenter.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.output))
    segmenter.run()
    assert [bool(o) for o in seen] == [True, False, False, True]  # the good ones before and after were segmented
    rows = list(csv.DictReader(open(tmp_path / "skipped_inputs.csv", newline="")))
    assert [r["file"] for r in rows] == ["unreadable", "?"]
    assert "pixel type RGB not supported" in rows[0]["problem"] and "out of memory" in rows[1]["problem"]
