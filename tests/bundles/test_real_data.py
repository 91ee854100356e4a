"""pam_unet3d_hippocampus on the real MSD Task04 Hippocampus data (../shared/data/msd_hippocampus).

1. a short training run on 12 real cases learns (the training loss goes down);
2. the COMMITTED weights (bundles/pam_unet3d_hippocampus/models/model.pt) reach mean foreground Dice >= 0.80 on
   8 of the bundle's 40 validation cases (the last 40 by sorted name). This test fails, never skips, when the
   weights are missing.

The data is linked into temporary MSD-layout folders, never copied into the repository. Skipped only when the
shared data folder is absent.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "ci"))

import verify_bundles as vb  # noqa: E402

BUNDLE = "pam_unet3d_hippocampus"
DATA = REPO_ROOT.parent / "shared" / "data" / "msd_hippocampus"  # ../shared/data beside the checkout
COMMITTED_WEIGHTS = REPO_ROOT / "bundles" / BUNDLE / "models" / "model.pt"
NUM_VAL = 40  # the bundle's validation split: the last 40 cases by sorted name
MIN_DICE = 0.80

needs_data = pytest.mark.skipif(
    not (DATA / "imagesTr").is_dir() or not (DATA / "labelsTr").is_dir(),
    reason=f"real hippocampus data not available at {DATA} (imagesTr/labelsTr)",
)


def _case_names() -> list[str]:
    return sorted(p.name for p in (DATA / "imagesTr").iterdir() if p.name.endswith((".nii", ".nii.gz")) and not p.name.startswith("."))


def _link_cases(names: list[str], root: Path) -> Path:
    """An MSD-layout folder of symlinks to ``names`` (image and label)."""
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
        for name in names:
            (root / sub / name).symlink_to(DATA / sub / name)
    return root


@needs_data
def test_short_training_on_real_cases_lowers_the_loss(tmp_path):
    from ignite.engine import Events
    from monai.handlers import from_engine

    names = _case_names()[:12]  # training cases (the validation split is the last 40)
    data = _link_cases(names, tmp_path / "data")
    losses: list[tuple[int, float]] = []

    def record_loss(workflow) -> None:
        trainer = workflow.parser.get_parsed_content("train#trainer")
        trainer.add_event_handler(
            Events.ITERATION_COMPLETED,
            lambda engine: losses.append((engine.state.epoch, float(from_engine(["loss"], first=True)(engine.state.output)))),
        )

    settings = {
        "overrides": {"roi_size": [32, 48, 32]},
        "train_overrides": {"num_val": 4, "epochs": 2, "val_interval": 2, "num_workers": 0, "cache_rate": 0.0},
    }
    workflow = vb.run_training(vb.bundle_path(BUNDLE), settings, data, tmp_path / "ckpt", tmp_path / "out", on_initialized=record_loss)
    assert workflow.parser.get_parsed_content("train#trainer").state.epoch == 2
    first = [loss for epoch, loss in losses if epoch == 1]
    last = [loss for epoch, loss in losses if epoch == 2]
    assert len(first) == len(last) == 4, losses  # 8 training cases, batch size 2
    mean_first, mean_last = sum(first) / len(first), sum(last) / len(last)
    print(f"training loss: epoch 1 mean {mean_first:.4f}, epoch 2 mean {mean_last:.4f}; per iteration {losses}")
    assert mean_last < mean_first, f"loss did not go down: epoch 1 {first}, epoch 2 {last}"
    assert losses[-1][1] < losses[0][1], losses


@needs_data
def test_committed_weights_reach_dice_on_validation_cases(tmp_path):
    assert COMMITTED_WEIGHTS.is_file(), (
        f"committed weights missing: {COMMITTED_WEIGHTS} (train the bundle: python -m monai.bundle run training "
        "--config_file configs/train.json from the bundle folder)"
    )
    weights = tmp_path / "model.pt"
    shutil.copy(COMMITTED_WEIGHTS, weights)  # a stable copy, in case the file is being rewritten
    names = _case_names()
    validation = names[-NUM_VAL:][:8]
    # msd_datalist needs more cases than num_val: one training case in front keeps the 8 as the validation split
    data = _link_cases([names[0], *validation], tmp_path / "data")
    settings = {"overrides": {}, "train_overrides": {"num_val": 8, "num_workers": 0, "cache_rate": 0.0}}  # full roi
    metrics = vb.run_evaluation(vb.bundle_path(BUNDLE), settings, data, weights, tmp_path / "eval")
    rows = (tmp_path / "eval" / "val_mean_dice_raw.csv").read_text().splitlines()
    evaluated = sorted(Path(r.split(",")[0]).name for r in rows[1:])
    assert evaluated == validation, evaluated
    print(f"committed weights on {validation}: {metrics}")
    assert metrics["val_mean_dice"] >= MIN_DICE, f"mean foreground Dice {metrics['val_mean_dice']:.4f} < {MIN_DICE}"
