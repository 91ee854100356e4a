import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medattn_networks.data import (
    BRATS_MODALITIES,
    BratsRegionsd,
    BratsRegionsToLabelsd,
    CheckChannelsd,
    brats_datalist,
    brats_inference_datalist,
    find_brats_cases,
    make_brats_cases,
    make_msd_task,
    msd_datalist,
    split_cases,
)


def test_split_is_last_cases_by_name():
    train, val = split_cases(["c", "a", "d", "b", "e"], 2)
    assert train == ["a", "b", "c"] and val == ["d", "e"]
    with pytest.raises(ValueError, match="num_val"):
        split_cases(["a", "b"], 2)


def test_msd_datalist_pairs_and_split(tmp_path):
    make_msd_task(tmp_path, num_cases=5)
    (tmp_path / "imagesTr" / "._case_000.nii.gz").write_bytes(b"resource fork")  # ignored like any hidden file
    everything = msd_datalist(tmp_path, "all")
    assert [p["image"].rsplit("/", 1)[1] for p in everything] == [f"case_{i:03d}.nii.gz" for i in range(5)]
    assert all(p["label"].replace("labelsTr", "imagesTr") == p["image"] for p in everything)
    val = msd_datalist(tmp_path, "validation", num_val=2)
    train = msd_datalist(tmp_path, "training", num_val=2)
    assert [v["image"] for v in val] == [e["image"] for e in everything[3:]]
    assert len(train) == 3 and not {t["image"] for t in train} & {v["image"] for v in val}


def test_msd_datalist_uses_dataset_json(tmp_path):
    make_msd_task(tmp_path, num_cases=3)
    manifest = {"training": [{"image": "./imagesTr/case_001.nii.gz", "label": "./labelsTr/case_001.nii.gz"}]}
    (tmp_path / "dataset.json").write_text(json.dumps(manifest))
    items = msd_datalist(tmp_path, "all")
    assert len(items) == 1 and items[0]["image"].endswith("case_001.nii.gz")


def test_msd_datalist_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="MSD dataset folder not found: .*nowhere"):
        msd_datalist(tmp_path / "nowhere")
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    with pytest.raises(FileNotFoundError, match="no NIfTI images"):
        msd_datalist(tmp_path)
    make_msd_task(tmp_path, num_cases=2)
    (tmp_path / "labelsTr" / "case_001.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="have no label.*case_001"):
        msd_datalist(tmp_path, "all")


def test_msd_datalist_validation_folder_and_json(tmp_path):
    make_msd_task(tmp_path, num_cases=4)
    (tmp_path / "imagesVal").mkdir()
    (tmp_path / "labelsVal").mkdir()
    for name in ("case_002.nii.gz", "case_003.nii.gz"):  # the released MAM layout: held-out cases in their own folders
        (tmp_path / "imagesTr" / name).rename(tmp_path / "imagesVal" / name)
        (tmp_path / "labelsTr" / name).rename(tmp_path / "labelsVal" / name)
    train = msd_datalist(tmp_path, "training", num_val=3, val_source="folder")  # num_val is ignored: all of imagesTr
    val = msd_datalist(tmp_path, "validation", val_source="folder")
    assert [Path(t["image"]).name for t in train] == ["case_000.nii.gz", "case_001.nii.gz"]
    assert [Path(v["image"]).parent.name for v in val] == ["imagesVal"] * 2
    assert [Path(v["label"]).parent.name for v in val] == ["labelsVal"] * 2
    (tmp_path / "labelsVal" / "case_003.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="imagesVal have no label file, e.g. .*labelsVal/case_003"):
        msd_datalist(tmp_path, "validation", val_source="folder")

    manifest = {
        "training": [{"image": "imagesTr/case_000.nii.gz", "label": "labelsTr/case_000.nii.gz"}],
        "validation": [{"image": "imagesTr/case_001.nii.gz", "label": "labelsTr/case_001.nii.gz"}],
    }
    (tmp_path / "dataset.json").write_text(json.dumps(manifest))
    assert [Path(t["image"]).name for t in msd_datalist(tmp_path, "training", val_source="json")] == ["case_000.nii.gz"]
    assert [Path(v["image"]).name for v in msd_datalist(tmp_path, "validation", val_source="json")] == ["case_001.nii.gz"]
    (tmp_path / "dataset.json").write_text(json.dumps({"training": manifest["training"]}))
    with pytest.raises(ValueError, match="dataset.json has no 'validation' list"):
        msd_datalist(tmp_path, "validation", val_source="json")
    with pytest.raises(ValueError, match="val_source must be"):
        msd_datalist(tmp_path, "validation", val_source="imagesVal")


@pytest.mark.parametrize("grades", [("HGG", "LGG"), ("",)])
def test_brats_datalist_nested_and_flat(tmp_path, grades):
    make_brats_cases(tmp_path, num_cases=4, shape=(8, 8, 6), grades=grades)
    items = brats_datalist(tmp_path, "all")
    assert [i["case"] for i in items] == [f"Brats18_SYN_{k:03d}_1" for k in range(4)]
    for item in items:
        assert [f.rsplit("_", 1)[1] for f in item["image"]] == [f"{m}.nii.gz" for m in BRATS_MODALITIES]
        assert item["label"].endswith(f"{item['case']}_seg.nii.gz")
    assert [i["case"] for i in brats_datalist(tmp_path, "validation", num_val=1)] == ["Brats18_SYN_003_1"]


def test_brats_missing_modality_is_named(tmp_path):
    make_brats_cases(tmp_path, num_cases=2, shape=(8, 8, 6))
    (tmp_path / "HGG" / "Brats18_SYN_000_1" / "Brats18_SYN_000_1_t1ce.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="Brats18_SYN_000_1_t1ce.nii.gz"):
        brats_datalist(tmp_path, "all")
    with pytest.raises(FileNotFoundError, match="no BraTS case folders"):
        brats_datalist(tmp_path / "LGG" / "Brats18_SYN_001_1")


@pytest.mark.parametrize("suffix", ["flair", "t1"])
def test_brats_case_without_a_modality_is_reported_not_ignored(tmp_path, suffix, caplog):
    make_brats_cases(tmp_path, num_cases=4, shape=(8, 8, 6))
    case = "Brats18_SYN_002_1"
    (tmp_path / "HGG" / case / f"{case}_{suffix}.nii.gz").unlink()
    assert [c.name for c in find_brats_cases(tmp_path)] == [f"Brats18_SYN_{k:03d}_1" for k in range(4)]
    with caplog.at_level(logging.ERROR, logger="medattn.inputs"):
        items = brats_inference_datalist(tmp_path, report_dir=tmp_path / "out")
    assert [i["case"] for i in items] == ["Brats18_SYN_000_1", "Brats18_SYN_001_1", "Brats18_SYN_003_1"]
    report = (tmp_path / "out" / "skipped_inputs.csv").read_text()
    assert f"{case}_{suffix}.nii.gz" in report and str(tmp_path / "HGG" / case) in report
    assert f"{case}_{suffix}.nii.gz" in caplog.text
    with pytest.raises(FileNotFoundError, match=f"{case}_{suffix}.nii.gz"):  # training: the case is named too
        brats_datalist(tmp_path, "all")


def test_brats_case_folder_found_by_any_of_its_files(tmp_path):
    (tmp_path / "case_a").mkdir()
    (tmp_path / "case_a" / "case_a_seg.nii").write_bytes(b"")
    (tmp_path / "case_b").mkdir()
    (tmp_path / "case_b" / "case_b_t2.nii.gz").write_bytes(b"")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme_t1.txt").write_bytes(b"")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "scan_flair.nii.gz").write_bytes(b"")  # not <folder>_<modality>
    assert [c.name for c in find_brats_cases(tmp_path)] == ["case_a", "case_b"]


def test_brats_inference_datalist_mixes_cases_and_4d_files(tmp_path):
    make_brats_cases(tmp_path, num_cases=2, shape=(8, 8, 6), grades=("",), with_label=False)
    image = np.zeros((8, 8, 6, 4), np.float32)
    nib.save(nib.Nifti1Image(image, np.eye(4)), str(tmp_path / "multi.nii.gz"))
    nib.save(nib.Nifti1Image(image[..., :2], np.eye(4)), str(tmp_path / "two_channels.nii.gz"))
    (tmp_path / "Brats18_SYN_001_1" / "Brats18_SYN_001_1_flair.nii.gz").write_bytes(b"\x1f\x8b broken")
    items = brats_inference_datalist(tmp_path, report_dir=tmp_path / "out")
    assert [i["case"] for i in items] == ["Brats18_SYN_000_1", "multi.nii.gz"]
    report = (tmp_path / "out" / "skipped_inputs.csv").read_text()
    assert "two_channels.nii.gz" in report and "expected 4 channel(s), found 2" in report
    assert "Brats18_SYN_001_1_flair.nii.gz" in report


def test_brats_inference_outputs_are_named_after_the_case(tmp_path):
    make_brats_cases(tmp_path / "in", 2, shape=(16, 16, 12), grades=(), with_label=False)
    cases = sorted(p.name for p in (tmp_path / "in").iterdir())
    items = brats_inference_datalist(tmp_path / "in", report_dir=tmp_path / "out")
    assert [Path(i["output"]).name for i in items] == [f"{c}_seg.nii.gz" for c in cases]
    (tmp_path / "out").mkdir(exist_ok=True)
    (tmp_path / "out" / f"{cases[0]}_seg.nii.gz").write_bytes(b"done before")
    left = brats_inference_datalist(tmp_path / "in", report_dir=tmp_path / "out", skip_existing=True)
    assert [i["case"] for i in left] == [cases[1]]


def test_brats_regions_round_trip():
    label = torch.tensor([0, 1, 2, 4, 2, 0], dtype=torch.float32).view(1, 6, 1, 1)
    regions = BratsRegionsd("label")({"label": label})["label"]
    assert regions.shape == (4, 6, 1, 1)
    expected = torch.tensor(
        [[1, 0, 0, 0, 0, 1], [0, 1, 1, 1, 1, 0], [0, 1, 0, 1, 0, 0], [0, 0, 0, 1, 0, 0]], dtype=torch.float32
    )
    assert torch.equal(regions[..., 0, 0], expected)
    back = BratsRegionsToLabelsd("label")({"label": MetaTensor(regions)})["label"]
    assert back.dtype == torch.uint8 and torch.equal(back.flatten(), label.flatten().to(torch.uint8))


def test_regions_to_labels_enforces_nesting():
    regions = torch.zeros(4, 3, 1, 1)
    regions[3, 0] = 1  # enhancing without core: dropped
    regions[2, 1] = 1  # core without whole tumour: dropped
    regions[1:, 2] = 1
    assert BratsRegionsToLabelsd("p")({"p": regions})["p"].flatten().tolist() == [0, 0, 4]


def test_check_channels_names_the_file():
    image = MetaTensor(torch.zeros(2, 4, 4, 4), meta={"filename_or_obj": "/data/scan.nii.gz"})
    with pytest.raises(ValueError, match=r"/data/scan.nii.gz: expected a 3D image with 1 channel\(s\).*2 channel"):
        CheckChannelsd("image", num_channels=1)({"image": image})
    assert CheckChannelsd("image", num_channels=2)({"image": image})["image"] is image


def test_synapse_heldout_keeps_validation_cases_out_of_training(tmp_path):
    from medattn_networks.data import make_synapse_transunet, synapse_datalist, synapse_heldout
    from medattn_networks.data.synapse import LoadNpzH5d

    root = make_synapse_transunet(tmp_path / "Synapse", train_cases=("case0005", "case0006", "case0007"), shape=(20, 24, 5))
    all_slices = synapse_datalist(root, "train")
    train = synapse_heldout(root, "train", 2)
    (val_a, val_b) = synapse_heldout(root, "val", 2)
    assert {item["case"] for item in train} == {"case0005"}
    assert [val_a["case"], val_b["case"]] == ["case0006", "case0007"]
    assert len(train) + len(val_a["image"]) + len(val_b["image"]) == len(all_slices)
    # the held-out slices come back as one volume, slices first in slice order, like the h5 test volumes
    volume = LoadNpzH5d(["image", "label"])(val_a)
    slices = [np.load(p) for p in val_a["image"]]
    assert tuple(volume["image"].shape) == (1, 5, *slices[0]["image"].shape)
    for k, data in enumerate(slices):
        assert np.array_equal(volume["image"][0, k].numpy(), data["image"].astype(np.float32))
        assert np.array_equal(volume["label"][0, k].numpy(), data["label"].astype(np.uint8))
    with pytest.raises(ValueError, match="num_val must hold out between 1 and 2"):
        synapse_heldout(root, "val", 3)


def test_isic2018_layout_reads_aligned_images_and_masks(tmp_path):
    from monai.transforms import AsDiscreted, Compose, EnsureChannelFirstd, LoadImaged

    from medattn_networks.data import isic2018_datalist, make_isic2018

    root = make_isic2018(tmp_path / "isic", {"train": 3, "val": 1, "test": 2}, size=(40, 56))
    train, val, test = (isic2018_datalist(root, s) for s in ("train", "val", "test"))
    assert [len(train), len(val), len(test)] == [3, 1, 2]
    assert [i["case"] for i in test] == ["ISIC_0000004", "ISIC_0000005"]
    assert test[0]["label"].endswith("ISIC2018_Task1_Test_GroundTruth/ISIC_0000004_segmentation.png")
    load = Compose([
        LoadImaged(["image", "label"], reader="PILReader", image_only=True),
        EnsureChannelFirstd(["image", "label"]),
        AsDiscreted("label", threshold=128),
    ])  # fmt: skip
    d = load(train[0])
    assert tuple(d["image"].shape[0:1]) == (3,) and d["image"].shape[1:] == d["label"].shape[1:]
    assert set(np.unique(d["label"].numpy()).tolist()) == {0.0, 1.0}
    # the lesion is the dark region: image and mask are read in the same orientation
    brightness = d["image"].float().mean(0)
    lesion = d["label"][0] > 0
    assert brightness[lesion].mean() < 0.6 * brightness[~lesion].mean()
    # images only (an inference folder), and the errors that name what is missing
    assert "label" not in isic2018_datalist(root, "val", with_labels=False)[0]
    (root / "ISIC2018_Task1_Training_GroundTruth" / "ISIC_0000001_segmentation.png").unlink()
    with pytest.raises(FileNotFoundError, match="lacks ISIC_0000001_segmentation.png"):
        isic2018_datalist(root, "train")
    with pytest.raises(ValueError, match="split must be one of"):
        isic2018_datalist(root, "validation")


def test_isic2018_training_images_split_is_the_papers_partition(tmp_path):
    from medattn_networks.data import isic2018_split, make_isic2018

    root = make_isic2018(tmp_path / "isic", {"train": 23, "val": 2, "test": 1}, size=(16, 16))
    parts = {p: [i["case"] for i in isic2018_split(root, p, "training_images")] for p in ("train", "val", "test")}
    # floor(0.7·23) = 16 train, floor(0.1·23) = 2 val, the remaining 5 test, in file-name order, disjoint
    assert [len(parts[p]) for p in ("train", "val", "test")] == [16, 2, 5]
    assert parts["train"] + parts["val"] + parts["test"] == [f"ISIC_{k:07d}" for k in range(23)]
    assert all(i["label"].endswith(f"{i['case']}_segmentation.png") for i in isic2018_split(root, "test", "training_images"))
    # the official split reads the three challenge folders
    assert [i["case"] for i in isic2018_split(root, "val")] == ["ISIC_0000023", "ISIC_0000024"]
    assert [i["case"] for i in isic2018_split(root, "test", "official")] == ["ISIC_0000025"]
    with pytest.raises(ValueError, match="split must be one of official, training_images"):
        isic2018_split(root, "train", "random")
    with pytest.raises(ValueError, match="part must be one of"):
        isic2018_split(root, "holdout")
    small = make_isic2018(tmp_path / "small", {"train": 9}, size=(16, 16))
    with pytest.raises(ValueError, match="at least 10 training images .* found 9"):
        isic2018_split(small, "val", "training_images")
