"""Synapse (TransUNet preprocessed and raw BTCV) and ACDC (SSL4MIS h5) readers on files in the published layouts."""

from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from medattn_networks.data.acdc import ACDC_CLASSES, acdc_datalist, acdc_train_transforms
from medattn_networks.data.synapse import (
    BTCV_LABELS,
    BTCV_TO_SYNAPSE,
    SYNAPSE_CLASSES,
    SYNAPSE_TEST_CASES,
    SYNAPSE_TRAIN_CASES,
    TOTALSEG_TO_SYNAPSE,
    LoadNpzH5d,
    RandomRotFlipd,
    RemapLabelsd,
    ZScoreShiftd,
    btcv_datalist,
    convert_btcv_to_transunet,
    slice_train_transforms,
    synapse_datalist,
    synapse_nifti_transforms,
    write_transunet_case,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"  # ../shared/data beside the checkout
ACDC_DIR, TOTALSEG_DIR = SHARED / "acdc", SHARED / "totalseg_ct"


# ------------------------------------------------------------------------------------------- helpers
def _slice(rng, shape=(12, 10), classes=9):
    image = rng.random(shape).astype(np.float32)
    label = np.zeros(shape, np.float32)  # TransUNet's npz labels are float arrays
    label[2:6, 3:7] = rng.integers(1, classes)
    return image, label


def make_transunet_synapse(root, train=(("case0005", 3), ("case0006", 2)), test=("case0001", "case0002"), lists=True):
    rng = np.random.default_rng(0)
    (root / "train_npz").mkdir(parents=True)
    (root / "test_vol_h5").mkdir()
    names = []
    for case, count in train:
        for k in range(count):
            image, label = _slice(rng)
            np.savez(root / "train_npz" / f"{case}_slice{k:03d}.npz", image=image, label=label)
            names.append(f"{case}_slice{k:03d}")
    for case in test:
        image, label = rng.random((4, 12, 10)).astype(np.float32), np.zeros((4, 12, 10), np.float32)
        label[1:3, 2:5, 2:5] = 5
        with h5py.File(root / "test_vol_h5" / f"{case}.npy.h5", "w") as f:
            f["image"], f["label"] = image, label
    if lists:
        folder = root / "lists" / "lists_Synapse"
        folder.mkdir(parents=True)
        (folder / "train.txt").write_text("".join(f"{n}\n" for n in names))
        (folder / "test_vol.txt").write_text("".join(f"{c}\n" for c in test))
    return names


def make_btcv(root, shape=(6, 5, 4)):
    """Raw BTCV: img/imgNNNN.nii.gz (int16 HU) and label/labelNNNN.nii.gz (ids 0..13), 30 cases."""
    (root / "img").mkdir(parents=True)
    (root / "label").mkdir()
    rng = np.random.default_rng(1)
    affine = np.diag([0.8, 0.8, 3.0, 1.0])
    for i in (*range(1, 11), *range(21, 41)):
        image = rng.integers(-1000, 1000, shape).astype(np.int16)
        label = rng.integers(0, 14, shape).astype(np.uint8)
        nib.save(nib.Nifti1Image(image, affine), str(root / "img" / f"img{i:04d}.nii.gz"))
        nib.save(nib.Nifti1Image(label, affine), str(root / "label" / f"label{i:04d}.nii.gz"))


def make_acdc(root, slices_subfolder=False):
    rng = np.random.default_rng(2)
    data = root / "data"
    slice_dir = data / "slices" if slices_subfolder else data
    slice_dir.mkdir(parents=True)
    names = []
    for case in ("patient001_frame01", "patient001_frame12"):
        volume = rng.random((3, 16, 14)).astype(np.float32)
        label = rng.integers(0, 4, (3, 16, 14)).astype(np.uint8)
        with h5py.File(data / f"{case}.h5", "w") as f:
            f.create_dataset("image", data=volume, compression="gzip")
            f.create_dataset("label", data=label, compression="gzip")
        for k in range(3):
            with h5py.File(slice_dir / f"{case}_slice_{k}.h5", "w") as f:
                f["image"], f["label"] = volume[k], label[k]
            names.append(f"{case}_slice_{k}")
    (root / "train_slices.list").write_text("\n".join(names) + "\n")
    (root / "val.list").write_text("patient001_frame01\npatient001_frame12\n")
    return names


# ------------------------------------------------------------------------------------------- constants
def test_transunet_split_and_label_mapping():
    assert len(SYNAPSE_TRAIN_CASES) == 18 and len(SYNAPSE_TEST_CASES) == 12
    assert not set(SYNAPSE_TRAIN_CASES) & set(SYNAPSE_TEST_CASES)
    assert {int(c[4:]) for c in (*SYNAPSE_TRAIN_CASES, *SYNAPSE_TEST_CASES)} == {*range(1, 11), *range(21, 41)}
    assert sorted(int(c[4:]) for c in SYNAPSE_TEST_CASES) == [1, 2, 3, 4, 8, 22, 25, 29, 32, 35, 36, 38]
    assert SYNAPSE_CLASSES == (
        "background", "aorta", "gallbladder", "kidney_left", "kidney_right", "liver", "pancreas", "spleen", "stomach"
    )
    # the mapping sends each BTCV organ to the TransUNet class of the same name
    assert sorted(BTCV_TO_SYNAPSE.values()) == list(range(1, 9))
    assert all(BTCV_LABELS[b] == SYNAPSE_CLASSES[s] for b, s in BTCV_TO_SYNAPSE.items())
    totalseg_names = {1: "spleen", 2: "kidney_right", 3: "kidney_left", 4: "gallbladder", 5: "liver", 6: "stomach",
                      7: "pancreas", 52: "aorta"}
    assert all(totalseg_names[t] == SYNAPSE_CLASSES[s] for t, s in TOTALSEG_TO_SYNAPSE.items())


# ------------------------------------------------------------------------------------------- TransUNet layout
def test_synapse_preprocessed_layout_slices_and_volumes(tmp_path):
    names = make_transunet_synapse(tmp_path)
    train = synapse_datalist(tmp_path, "train")
    expected = [("case0005", 0), ("case0005", 1), ("case0005", 2), ("case0006", 0), ("case0006", 1)]
    assert [(i["case"], i["slice"]) for i in train] == expected
    assert [Path(i["image"]).name for i in train] == [f"{n}.npz" for n in names]
    item = LoadNpzH5d(keys=("image", "label"))(train[0])
    assert isinstance(item["image"], MetaTensor) and item["image"].shape == (1, 12, 10)
    assert item["image"].dtype == torch.float32 and item["label"].dtype == torch.uint8
    assert item["image"].meta["filename_or_obj"] == train[0]["image"]
    test = synapse_datalist(tmp_path, "test")
    assert [i["case"] for i in test] == ["case0001", "case0002"]
    volume = LoadNpzH5d(keys=("image", "label"))(test[0])
    assert volume["image"].shape == volume["label"].shape == (1, 4, 12, 10)
    assert set(torch.unique(volume["label"]).tolist()) == {0, 5}


def test_synapse_without_lists_uses_files_and_transunet_test_cases(tmp_path):
    make_transunet_synapse(tmp_path, lists=False)
    assert len(synapse_datalist(tmp_path, "train")) == 5
    with pytest.raises(FileNotFoundError, match=r"10 test volume\(s\) named in the TransUNet test split.*case0008.npy.h5"):
        synapse_datalist(tmp_path, "test")


def test_synapse_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="Synapse data folder not found"):
        synapse_datalist(tmp_path / "nowhere")
    make_transunet_synapse(tmp_path)
    (tmp_path / "train_npz" / "case0006_slice001.npz").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 slice file\(s\) named in .*train.txt.*case0006_slice001.npz"):
        synapse_datalist(tmp_path, "train")
    np.savez(tmp_path / "bad.npz", image=np.zeros((2, 2), np.float32))
    with pytest.raises(KeyError, match="bad.npz' has no array 'label'"):
        LoadNpzH5d(keys=("image", "label"))({"image": str(tmp_path / "bad.npz"), "label": str(tmp_path / "bad.npz")})
    with pytest.raises(ValueError, match="split must be"):
        synapse_datalist(tmp_path, "validation")


def test_slice_train_pipeline_shapes_and_determinism(tmp_path):
    make_transunet_synapse(tmp_path)
    item = synapse_datalist(tmp_path, "train")[0]
    outputs = []
    for _ in range(2):
        pipeline = slice_train_transforms(size=16, rotate_prob=1.0)
        pipeline.set_random_state(3)
        outputs.append(pipeline(item))
    out = outputs[0]
    assert out["image"].shape == (3, 16, 16) and out["label"].shape == (1, 16, 16)
    assert torch.equal(out["image"][0], out["image"][2]) and float(out["image"].min()) >= 0.0
    assert set(torch.unique(out["label"]).tolist()) <= {0.0, *map(float, range(1, 9))}
    assert torch.equal(outputs[0]["image"], outputs[1]["image"]) and torch.equal(outputs[0]["label"], outputs[1]["label"])
    # no random rot90: it would transpose this non-square slice
    single = slice_train_transforms(size=(20, 16), zscore=False, repeat_channels=None, rotate_prob=0.0, flip_prob=0.0)(item)
    assert single["image"].shape == (1, 20, 16)


def test_zscore_then_shift_to_min_zero():
    image = MetaTensor(torch.arange(12.0).reshape(1, 3, 4) * 3 + 7, meta={"filename_or_obj": "x"})
    out = ZScoreShiftd(keys="image")({"image": image})["image"]
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "x"
    assert float(out.min()) == 0.0
    shift = (image.mean() - image.min()) / image.std(unbiased=False)
    assert torch.allclose(out.std(unbiased=False), torch.tensor(1.0)) and torch.allclose(out.mean(), shift)


def test_random_rot_flip_branches():
    image = torch.arange(36.0).reshape(1, 6, 6)
    label = (image > 17).to(torch.uint8)
    variants = [np.flip(np.rot90(image[0].numpy(), k), axis).copy() for k in range(4) for axis in (0, 1)]
    flip_only = RandomRotFlipd(keys=("image", "label"), rotate_prob=0.0, flip_prob=1.0)
    rotate_only = RandomRotFlipd(keys=("image", "label"), rotate_prob=1.0, degrees=20)
    identity = RandomRotFlipd(keys=("image", "label"), rotate_prob=0.0, flip_prob=0.0)
    for seed in range(6):
        flip_only.set_random_state(seed)
        out = flip_only({"image": image, "label": label})
        assert any(np.array_equal(out["image"][0].numpy(), v) for v in variants)
        assert torch.equal(out["label"], (out["image"] > 17).to(torch.uint8))  # same rot90/flip for both keys
        rotate_only.set_random_state(seed)
        rotated = rotate_only({"image": image, "label": label})
        assert rotated["image"].shape == (1, 6, 6) and rotated["label"].dtype == torch.uint8
        assert set(torch.unique(rotated["image"]).tolist()) <= set(image.unique().tolist())  # nearest: no new values
        assert abs(rotate_only._angle) <= 20
    assert torch.equal(identity({"image": image, "label": label})["image"], image)
    # defaults (papers.md): half rotations, the rest rot90 + flip, never untouched
    default = RandomRotFlipd(keys="image")
    default.set_random_state(0)
    draws = []
    for _ in range(400):
        default.randomize()
        draws.append((default._rotate, default._flip))
    rotated_share = sum(r for r, _ in draws) / len(draws)
    assert 0.42 < rotated_share < 0.58 and all(r != f for r, f in draws)


# ------------------------------------------------------------------------------------------- raw BTCV
def test_btcv_split_transforms_and_conversion(tmp_path):
    raw, converted = tmp_path / "RawData" / "Training", tmp_path / "Synapse"
    make_btcv(raw)
    train, test = btcv_datalist(tmp_path, "train"), btcv_datalist(tmp_path, "test")
    assert tuple(i["case"] for i in train) == SYNAPSE_TRAIN_CASES and tuple(i["case"] for i in test) == SYNAPSE_TEST_CASES
    assert train[0]["image"].endswith("img/img0005.nii.gz") and train[0]["label"].endswith("label/label0005.nii.gz")
    assert len(btcv_datalist(tmp_path, "all")) == 30

    item = Compose(synapse_nifti_transforms())(test[0])
    raw_image = nib.load(test[0]["image"]).get_fdata()
    raw_label = np.asarray(nib.load(test[0]["label"]).dataobj)
    assert item["image"].shape == item["label"].shape == (1, 4, 5, 6)  # (1, z, y, x)
    expected = (np.clip(raw_image, -125, 275) + 125) / 400
    assert np.allclose(item["image"][0].numpy(), expected.transpose(2, 1, 0), atol=1e-6)
    expected_label = np.zeros_like(raw_label)
    for btcv_id, synapse_id in BTCV_TO_SYNAPSE.items():
        expected_label[raw_label == btcv_id] = synapse_id
    assert np.array_equal(item["label"][0].numpy(), expected_label.transpose(2, 1, 0))

    convert_btcv_to_transunet(tmp_path, converted)
    slices = synapse_datalist(converted, "train")
    assert len(slices) == 18 * 4 and slices[0]["case"] == "case0005" and slices[-1]["slice"] == 3
    volumes = synapse_datalist(converted, "test")
    assert [v["case"] for v in volumes] == list(SYNAPSE_TEST_CASES)
    loaded = LoadNpzH5d(keys=("image", "label"))(volumes[0])
    assert torch.allclose(loaded["image"], item["image"].as_tensor(), atol=1e-6)
    assert torch.equal(loaded["label"], item["label"].as_tensor().to(torch.uint8))
    first = LoadNpzH5d(keys=("image", "label"))(slices[1])  # case0005 slice 1 == z index 1 of its volume
    case5 = Compose(synapse_nifti_transforms())(train[0])
    assert torch.allclose(first["image"][0], case5["image"][0, 1], atol=1e-6)


def test_btcv_missing_case_is_named(tmp_path):
    make_btcv(tmp_path)
    (tmp_path / "label" / "label0022.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="lacks label0022.nii.gz"):
        btcv_datalist(tmp_path, "test")
    (tmp_path / "img" / "img0038.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="lacks img0038.nii.gz"):
        btcv_datalist(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="no img/ and label/"):
        btcv_datalist(tmp_path / "img")


def test_remap_labels_drops_unlisted_ids():
    label = torch.tensor([[[0, 1, 5, 8, 11, 13]]], dtype=torch.uint8)
    out = RemapLabelsd(keys="label", mapping=BTCV_TO_SYNAPSE)({"label": label})["label"]
    assert out.tolist() == [[[0, 7, 0, 1, 6, 0]]]


@pytest.mark.skipif(not (TOTALSEG_DIR / "example_seg.nii.gz").is_file(), reason="shared TotalSegmentator example absent")
def test_totalsegmentator_example_maps_to_eight_organs(tmp_path):
    item = {"image": str(TOTALSEG_DIR / "example_ct_sm.nii.gz"), "label": str(TOTALSEG_DIR / "example_seg.nii.gz")}
    out = Compose(synapse_nifti_transforms(mapping=TOTALSEG_TO_SYNAPSE))(item)
    assert out["image"].shape == (1, 30, 101, 122) and 0.0 <= float(out["image"].min()) <= float(out["image"].max()) <= 1.0
    label = out["label"][0]
    assert set(torch.unique(label).tolist()) == set(range(9))
    assert all(set(torch.unique(label[z]).tolist()) == set(range(9)) for z in range(2, 15))
    (path,) = write_transunet_case(item["image"], item["label"], tmp_path, "case0001", "test", TOTALSEG_TO_SYNAPSE)
    (tmp_path / "test_vol.txt").write_text("case0001\n")
    volume = LoadNpzH5d(keys=("image", "label"))(synapse_datalist(tmp_path, "test")[0])
    assert torch.equal(volume["label"][0], label.to(torch.uint8))


# ------------------------------------------------------------------------------------------- ACDC
@pytest.mark.parametrize("slices_subfolder", [False, True])
def test_acdc_h5_layout(tmp_path, slices_subfolder):
    names = make_acdc(tmp_path, slices_subfolder)
    train = acdc_datalist(tmp_path, "train")
    assert [Path(i["image"]).stem for i in train] == names
    assert (train[4]["case"], train[4]["slice"]) == ("patient001_frame12", 1)
    item = LoadNpzH5d(keys=("image", "label"))(train[4])
    assert item["image"].shape == (1, 16, 14) and item["label"].dtype == torch.uint8
    val = acdc_datalist(tmp_path, "val")
    volume = LoadNpzH5d(keys=("image", "label"))(val[1])
    assert [v["case"] for v in val] == ["patient001_frame01", "patient001_frame12"] and volume["image"].shape == (1, 3, 16, 14)
    assert torch.equal(volume["image"][0, 1], item["image"][0]) and torch.equal(volume["label"][0, 1], item["label"][0])


def test_acdc_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="ACDC data folder not found"):
        acdc_datalist(tmp_path / "nowhere")
    make_acdc(tmp_path)
    with pytest.raises(FileNotFoundError, match="ACDC list file not found: .*test.list"):
        acdc_datalist(tmp_path, "test")
    (tmp_path / "data" / "patient001_frame12_slice_2.h5").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 file\(s\) named in .*train_slices.list.*patient001_frame12_slice_2.h5"):
        acdc_datalist(tmp_path, "train")
    with pytest.raises(ValueError, match="split must be one of"):
        acdc_datalist(tmp_path, "training")


@pytest.mark.skipif(not (ACDC_DIR / "train_slices.list").is_file(), reason="shared ACDC data absent")
def test_acdc_real_files():
    train, val = acdc_datalist(ACDC_DIR, "train"), acdc_datalist(ACDC_DIR, "val")
    assert len(train) == 1312 and len(val) == 20 and len(ACDC_CLASSES) == 4
    load = LoadNpzH5d(keys=("image", "label"))
    for item in (train[0], train[700], val[0]):
        out = load(item)
        image, label = out["image"], out["label"]
        assert image.shape == label.shape and image.shape[0] == 1 and image.ndim == (3 if "slice" in item else 4)
        assert image.dtype == torch.float32 and 0.0 <= float(image.min()) <= float(image.max()) <= 1.0
        assert set(torch.unique(label).tolist()) <= {0, 1, 2, 3}
    pipeline = acdc_train_transforms()
    pipeline.set_random_state(0)
    out = pipeline(train[0])
    assert out["image"].shape == (3, 256, 256) and out["label"].shape == (1, 256, 256)
