"""``medattn sample_data``: every layout the readers support, each read back by its reader; help of the commands."""

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from medattn_networks import cli
from medattn_networks.data import (
    SAMPLE_LAYOUTS,
    acdc_datalist,
    brats_datalist,
    brats_inference_datalist,
    btcv_datalist,
    msd_datalist,
    synapse_datalist,
    synapse_layout_datalist,
)

LAYOUTS = ("nifti", "msd", "brats", "synapse", "btcv", "acdc", "isic", "images")


def test_every_reader_layout_is_offered():
    assert tuple(SAMPLE_LAYOUTS) == LAYOUTS


def test_unknown_layout_lists_the_choices(tmp_path):
    with pytest.raises(ValueError, match="unknown layout 'nnunet'") as info:
        cli.sample_data(str(tmp_path), layout="nnunet")
    for name in LAYOUTS:
        assert name in str(info.value)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("layout, num", [("synapse", 1), ("acdc", 1), ("synapse", 31), ("btcv", 31), ("msd", 0)])
def test_num_out_of_range_is_refused(tmp_path, layout, num):
    with pytest.raises(ValueError, match=f"num must be .* for layout '{layout}', got {num}"):
        cli.sample_data(str(tmp_path / "out"), layout=layout, num=num)


def test_nifti(tmp_path):
    from medattn_networks.engine.inputs import inference_datalist

    out = cli.sample_data(str(tmp_path / "nifti"), layout="nifti", num=3)
    assert out == str(tmp_path / "nifti")
    items = inference_datalist(out, num_channels=1)
    assert [Path(i["image"]).name for i in items] == [f"image_{k}.nii.gz" for k in range(3)]


def test_msd(tmp_path):
    out = cli.sample_data(str(tmp_path / "msd"), layout="msd", num=3)
    items = msd_datalist(out, "all")
    assert [Path(i["image"]).name for i in items] == [f"case_{k:03d}.nii.gz" for k in range(3)]
    assert all(Path(i["label"]).parent.name == "labelsTr" and Path(i["label"]).is_file() for i in items)


def test_brats(tmp_path):
    out = cli.sample_data(str(tmp_path / "brats"), layout="brats", num=3)
    items = brats_datalist(out, "all")
    assert [i["case"] for i in items] == [f"Brats18_SYN_{k:03d}_1" for k in range(3)]
    assert all(len(i["image"]) == 4 and Path(i["label"]).is_file() for i in items)
    assert len(brats_inference_datalist(out)) == 3


@pytest.mark.parametrize("num, train, test", [(2, ["case0005"], ["case0008"]), (3, ["case0005", "case0006"], ["case0008"])])
def test_synapse(tmp_path, num, train, test):
    out = cli.sample_data(str(tmp_path / "synapse"), layout="synapse", num=num)
    slices = synapse_datalist(out, "train")
    assert sorted({s["case"] for s in slices}) == train
    assert len(slices) == 4 * len(train)  # the synthetic volumes have 4 axial slices
    assert all(Path(s["image"]).parent.name == "train_npz" and Path(s["image"]).is_file() for s in slices)
    volumes = synapse_layout_datalist(out, "test", layout="transunet")
    assert [v["case"] for v in volumes] == test
    assert all(Path(v["image"]).name == f"{v['case']}.npy.h5" for v in volumes)
    assert not (Path(out) / "_raw_btcv").exists()


def test_btcv(tmp_path):
    out = cli.sample_data(str(tmp_path / "btcv"), layout="btcv", num=4)
    items = btcv_datalist(out, "all")
    assert [i["case"] for i in items] == ["case0005", "case0006", "case0008", "case0022"]
    assert all(Path(i["image"]).name == f"img{i['case'][4:]}.nii.gz" for i in items)
    assert all(Path(i["label"]).name == f"label{i['case'][4:]}.nii.gz" for i in items)
    test = synapse_layout_datalist(out, "test", layout="btcv", cases=["case0008", "case0022"])
    assert [i["case"] for i in test] == ["case0008", "case0022"]
    train = synapse_layout_datalist(out, "train", layout="btcv", cases=["case0005"], cache_dir=tmp_path / "cache")
    assert len(train) == 4 and {i["case"] for i in train} == {"case0005"}


def test_acdc(tmp_path):
    out = cli.sample_data(str(tmp_path / "acdc"), layout="acdc", num=3, seed=1)
    train = acdc_datalist(out, "train")
    assert sorted({i["case"] for i in train}) == ["patient001_frame01", "patient002_frame01"]
    assert len(train) == 2 * 4 and all(Path(i["image"]).is_file() for i in train)
    val = acdc_datalist(out, "val")
    assert [i["case"] for i in val] == ["patient003_frame01"]
    with h5py.File(val[0]["image"]) as f:
        assert f["image"].ndim == 3 and set(np.unique(f["label"][()])) <= {0, 1, 2, 3}


def test_isic(tmp_path):
    from medattn_networks.data import isic2018_datalist

    out = cli.sample_data(str(tmp_path / "isic"), layout="isic", num=5)
    counts = {split: len(isic2018_datalist(out, split)) for split in ("train", "val", "test")}
    assert counts == {"train": 5, "val": 2, "test": 2}  # ceil(5 / 4) held out in each of the other two folders


def test_images(tmp_path):
    from PIL import Image

    from medattn_networks.engine.inputs import image_folder_datalist

    out = cli.sample_data(str(tmp_path / "images"), layout="images", num=3)
    items = image_folder_datalist(out, num_channels=3)
    assert [Path(i["image"]).name for i in items] == ["image_0.jpg", "image_1.png", "image_2.jpg"]
    sizes = [Image.open(i["image"]).size for i in items]
    assert len(set(sizes)) == 3 and all(Image.open(i["image"]).mode == "RGB" for i in items)


def test_same_seed_same_files(tmp_path):
    a = Path(cli.sample_data(str(tmp_path / "a"), layout="msd", num=1, seed=3))
    b = Path(cli.sample_data(str(tmp_path / "b"), layout="msd", num=1, seed=3))
    name = "imagesTr/case_000.nii.gz"
    assert (a / name).read_bytes() == (b / name).read_bytes()


def _main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run ``medattn ARGS`` in this process: (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["medattn", *args])
    monkeypatch.setenv("PAGER", "cat")
    try:
        cli.main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(
    "command, flags",
    [
        ("sample_data", ["OUTPUT_DIR", "--layout", "--num", "--seed", "acdc", "synapse", "btcv", "random seed"]),
        ("bundles", ["--bundles_dir", "MEDATTN_BUNDLES"]),
        ("attention", ["create_attention", "no flags"]),
    ],
)
def test_help_describes_the_flags(monkeypatch, capsys, command, flags):
    code, out, err = _main(monkeypatch, capsys, command, "--help")
    assert code == 0, err
    for flag in flags:
        assert flag in out + err, (flag, out + err)


def test_help_of_the_installed_command_does_not_page(tmp_path):
    """``medattn sample_data --help`` as a user runs it, with no terminal: prints and exits."""
    script = Path(sys.executable).parent / "medattn"
    command = [str(script)] if script.is_file() else [sys.executable, "-c", "from medattn_networks.cli import main; main()"]
    env = {**os.environ, "PAGER": "cat"}
    result = subprocess.run(
        [*command, "sample_data", "--help"],
        capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout + result.stderr  # fire writes help to stderr when there is no terminal
    assert "--layout" in text and "acdc" in text and "--num" in text


def test_sample_data_from_the_command_line(monkeypatch, capsys, tmp_path):
    code, out, err = _main(monkeypatch, capsys, "sample_data", str(tmp_path / "acdc"), "--layout", "acdc", "--num", "2")
    assert code == 0, err
    assert str(tmp_path / "acdc") in out
    assert len(acdc_datalist(tmp_path / "acdc", "val")) == 1
    code, out, err = _main(monkeypatch, capsys, "sample_data", str(tmp_path / "x"), "--layout", "bogus")
    assert code != 0 and "unknown layout 'bogus'" in err and "acdc" in err


def test_btcv_beyond_24_cases_keeps_transunet_split(tmp_path):
    from medattn_networks.data import SYNAPSE_TEST_CASES, SYNAPSE_TRAIN_CASES

    out = cli.sample_data(str(tmp_path / "btcv"), layout="btcv", num=27)
    cases = {i["case"] for i in btcv_datalist(out, "all")}
    assert len(cases) == 27
    assert cases == set(SYNAPSE_TRAIN_CASES[:15]) | set(SYNAPSE_TEST_CASES)
    assert len(btcv_datalist(out, "test")) == 12  # the full TransUNet test split
