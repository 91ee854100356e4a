"""The training life cycle on the command line, as a user runs it: run folders, SIGKILL + resume, models/ untouched,
TensorBoard / MLflow / curves, promotion, the card's fine-tuning command, one-line errors with exit codes."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from medattn_networks.data import make_msd_task

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLE = REPO_ROOT / "bundles" / "pam_unet3d_hippocampus"
TINY = [
    "--num_val", "2", "--val_interval", "1", "--roi_size", "[16,16,16]", "--network_def#channels", "[4,8,16,32]",
    "--lr_step_epochs", "2", "--num_workers", "0", "--cache_rate", "0",
]  # fmt: skip


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("MEDATTN_DEBUG", None)
    return env


def _bundle_cmd(*args: str, config: str = "configs/train.json", run_id: str | None = "training") -> list[str]:
    head = [sys.executable, "-m", "monai.bundle", "run"] + ([run_id] if run_id else [])
    return head + ["--config_file", config, "--meta_file", "configs/metadata.json", "--logging_file", "configs/logging.conf", *args]


def _run(cmd: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=BUNDLE, env=_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def msd(tmp_path_factory) -> Path:
    return make_msd_task(tmp_path_factory.mktemp("msd"), 6, shape=(20, 24, 20))


def _equal_states(a: Path, b: Path) -> bool:
    sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_weights(msd, tmp_path):
    shipped = BUNDLE / "models" / "model.pt"
    shipped_before = shipped.stat().st_mtime_ns, shipped.read_bytes()[:4096]
    common = ["--dataset_dir", str(msd), *TINY, "--epochs", "4"]
    full = _run(_bundle_cmd(*common, "--run_dir", str(tmp_path / "full")))
    assert full.returncode == 0, full.stderr[-2000:]

    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        _bundle_cmd(*common, "--run_dir", str(killed_dir)), cwd=BUNDLE, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 240
    while not (killed_dir / "state_epoch1.pt").is_file():
        assert proc.poll() is None, "training ended before its first epoch state appeared"
        assert time.time() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # during epoch 2 (or its validation / checkpoint save)
    proc.wait()
    assert not (killed_dir / "model_final.pt").exists()
    for state in killed_dir.glob("state_epoch*.pt"):
        torch.load(state, weights_only=True)  # every checkpoint under a final name is whole

    resumed = _run(_bundle_cmd(*common, "--run_dir", str(killed_dir), "--resume", "true"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout + resumed.stderr
    last = torch.load(killed_dir / "state_epoch4.pt", weights_only=True)
    assert last["trainer"]["iteration"] // last["trainer"]["epoch_length"] == 4
    assert _equal_states(tmp_path / "full" / "model_final.pt", killed_dir / "model_final.pt")
    assert _equal_states(tmp_path / "full" / "model.pt", killed_dir / "model.pt")
    assert json.loads((tmp_path / "full" / "best.json").read_text())["epoch"] == json.loads((killed_dir / "best.json").read_text())["epoch"]
    assert (shipped.stat().st_mtime_ns, shipped.read_bytes()[:4096]) == shipped_before  # training never touches models/


def test_run_folder_tracking_curves_and_promotion(msd, tmp_path):
    runs = tmp_path / "runs"
    out = _run(_bundle_cmd("--dataset_dir", str(msd), *TINY, "--epochs", "2", "--runs_dir", str(runs)))
    assert out.returncode == 0, out.stderr[-2000:]
    (run_dir,) = runs.iterdir()
    assert {"model.pt", "model_final.pt", "best.json", "state_epoch1.pt", "state_epoch2.pt", "curves.png"} <= {p.name for p in run_dir.iterdir()}
    from medattn_networks.engine import read_scalars

    scalars = read_scalars(run_dir)
    assert len(scalars["train_loss"]) == 2 * 2  # 4 training cases, batch 2, 2 epochs
    assert [step for step, _ in scalars["val_mean_dice"]] == [1, 2]
    assert [step for step, _ in scalars["lr"]] == [1, 2]
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # promotion: the only way into models/; a bundle copy stands in for the real one
    from medattn_networks.engine import promote, sha256_file

    bundle_copy = tmp_path / "bundle"
    (bundle_copy / "configs").mkdir(parents=True)
    (bundle_copy / "configs" / "metadata.json").write_text((BUNDLE / "configs" / "metadata.json").read_text())
    (bundle_copy / "models").mkdir()
    (bundle_copy / "models" / "model.pt").write_bytes((BUNDLE / "models" / "model.pt").read_bytes())
    with pytest.raises(FileExistsError, match="not promoted from a run"):
        promote(run_dir, bundle_copy)
    record = promote(run_dir, bundle_copy, force=True)
    assert record["sha256"] == sha256_file(run_dir / "model.pt") == sha256_file(bundle_copy / "models" / "model.pt")
    assert record["metric"] == "val_mean_dice" and record["epoch"] in (1, 2)
    meta = json.loads((bundle_copy / "configs" / "metadata.json").read_text())
    assert meta["trained_weights"]["sha256"] == record["sha256"]
    promote(run_dir, bundle_copy, checkpoint="model_final.pt")  # promoted weights may be replaced without --force
    assert sha256_file(bundle_copy / "models" / "model.pt") == sha256_file(run_dir / "model_final.pt")


def test_mlflow_tracking_offline(msd, tmp_path):
    runs = tmp_path / "runs"
    out = _run(_bundle_cmd("--dataset_dir", str(msd), *TINY, "--epochs", "1", "--runs_dir", str(runs), "--tracking", "mlflow", "--output_dir", str(tmp_path / "eval")))
    assert out.returncode == 0, out.stderr[-3000:]
    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{runs / 'mlruns.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "pam_unet3d_hippocampus"]
    mlruns = client.search_runs([experiment.experiment_id])
    keys = set().union(*(r.data.metrics for r in mlruns))
    assert "train_loss" in keys and "val_mean_dice" in keys


def test_card_fine_tune_command_works_as_written(msd, tmp_path):
    card = (BUNDLE / "docs" / "README.md").read_text()
    (line,) = [l.strip() for l in card.splitlines() if l.strip().startswith("python -m monai.bundle run training") and "--load_pretrain true" in l]
    assert "/path/to/data" in line and "--pretrained_path models/model.pt" in line
    cmd = shlex.split(line.replace("/path/to/data", str(msd)))
    quick = ["--num_val", "2", "--val_interval", "1", "--num_workers", "0", "--cache_rate", "0", "--epochs", "1"]  # the shipped network
    cmd = [sys.executable, *cmd[1:], *quick, "--runs_dir", str(tmp_path / "runs")]
    out = subprocess.run(cmd, cwd=BUNDLE, env=_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "loaded weights from models/model.pt" in out.stdout + out.stderr


def _one_line_error(out: subprocess.CompletedProcess) -> str:
    lines = [l for l in out.stderr.splitlines() if l.strip()]
    assert "Traceback" not in out.stderr + out.stdout, out.stderr[-3000:]
    assert lines and lines[-1].startswith("error: "), out.stderr[-2000:]
    return lines[-1]


def test_unknown_override_names_the_closest_id(msd, tmp_path):
    out = _run(_bundle_cmd("--dataset_dir", str(msd), "--num_epochs", "1", "--runs_dir", str(tmp_path / "runs")))
    assert out.returncode == 2
    assert "--num_epochs" in _one_line_error(out) and "'--epochs'" in _one_line_error(out)
    out = _run(_bundle_cmd("--dataset_dir", str(msd), "--ouput_dir", "x", config="configs/inference.json", run_id=None))
    assert out.returncode == 2 and "'--output_dir'" in _one_line_error(out)
    assert not (tmp_path / "runs").exists()  # nothing started, no empty run folder


def test_missing_dataset_folder_leaves_no_run_folder(tmp_path):
    out = _run(_bundle_cmd("--dataset_dir", str(tmp_path / "nope"), "--runs_dir", str(tmp_path / "runs")))
    assert out.returncode == 2
    assert str(tmp_path / "nope") in _one_line_error(out)
    assert not (tmp_path / "runs").exists()


def test_resume_without_a_run_says_so(tmp_path, msd):
    out = _run(_bundle_cmd("--dataset_dir", str(msd), "--resume", "true", "--runs_dir", str(tmp_path / "runs")))
    assert out.returncode == 2 and "nothing to resume" in _one_line_error(out)


def test_debug_keeps_the_traceback(tmp_path):
    out = _run(_bundle_cmd("--dataset_dir", str(tmp_path / "nope"), "--runs_dir", str(tmp_path / "runs"), "--debug", "true"))
    assert out.returncode == 1 and "Traceback" in out.stderr
