"""``medattn demo``, ``plot`` and ``promote`` as a user meets them: a typo in --input_dir is an error, the count is of
what this run wrote, the Dice is printed on every run when reference labels exist."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from medattn_networks import cli

REPO_ROOT = Path(__file__).resolve().parents[1]
HIPPOCAMPUS_DATA = REPO_ROOT.parent / "shared" / "data" / "msd_hippocampus"


def _medattn(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    code = "import sys; from medattn_networks.cli import main; sys.argv = ['medattn', *sys.argv[1:]]; main()"
    env = dict(os.environ, PAGER="cat", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_demo_with_a_mistyped_input_dir_stops_and_creates_nothing(tmp_path):
    out = _medattn("demo", "--input_dir", "scnas", "--output_dir", "out", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == "error: input folder not found: 'scnas' is not a directory (pass --make_input to fill it with demo scans)"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not (HIPPOCAMPUS_DATA / "imagesTr").is_dir(), reason="needs ../shared/data/msd_hippocampus beside the checkout")
def test_demo_counts_what_it_wrote_and_prints_dice_every_time(tmp_path, capsys):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    outputs.mkdir()
    (outputs / "old_seg.nii.gz").write_bytes(b"left from an earlier run")
    for attempt in range(2):
        cli.demo(output_dir=str(outputs), input_dir=str(inputs), num=2, make_input=attempt == 0, data_dir=str(HIPPOCAMPUS_DATA))
        printed = capsys.readouterr().out
        assert "2 label map(s) written" in printed, printed
        dice_lines = [line for line in printed.splitlines() if "Dice anterior" in line]
        assert len(dice_lines) == 2, printed
        for line in dice_lines:  # the shipped weights on held-out cases: well above chance
            assert float(line.split("anterior ")[1].split(",")[0]) > 0.6
    assert sorted(p.name for p in inputs.iterdir()) == ["hippocampus_326.nii.gz", "hippocampus_327.nii.gz"]


def test_plot_and_promote_errors_name_the_problem(tmp_path):
    out = _medattn("plot", str(tmp_path / "missing_run"), cwd=tmp_path)
    assert out.returncode == 2 and f"run folder not found: '{tmp_path / 'missing_run'}'" in out.stderr
    (tmp_path / "run").mkdir()
    out = _medattn("promote", str(tmp_path / "run"), "--bundle_dir", str(REPO_ROOT / "bundles" / "pam_unet3d_hippocampus"), cwd=tmp_path)
    assert out.returncode == 2 and "nothing to promote" in out.stderr and "Traceback" not in out.stderr


def test_every_command_describes_its_flags(tmp_path):
    for command, flags in {"demo": ("--input_dir", "--make_input"), "plot": ("--output",), "promote": ("--checkpoint", "--force")}.items():
        out = _medattn(command, "--help", cwd=tmp_path)
        text = out.stdout + out.stderr
        assert all(flag.lstrip("-") in text for flag in flags), text
