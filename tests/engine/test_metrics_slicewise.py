"""TransUNet-rule Dice/HD95 against hand-computed cases, and slice-wise inference against a manual loop."""

import csv

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.engines import SupervisedEvaluator
from monai.handlers import IgniteMetricHandler, from_engine
from monai.transforms import AsDiscreted, Compose
from scipy.ndimage import zoom

from medattn_networks.data.synapse import zscore_shift
from medattn_networks.engine.metrics import (
    PER_CASE_CSV,
    SUMMARY_CSV,
    CaseMetricsSaver,
    HausdorffDistanceMM,
    PhysicalHausdorffDistanceMetric,
    TransUNetCaseMetric,
    case_metrics,
    dice_coefficient,
    hd95,
    metric_percase,
    voxel_spacing,
    write_case_metrics,
)
from medattn_networks.engine.slicewise import SliceWiseInferer, slicewise_inference


# ------------------------------------------------------------------------------------------- metrics
def test_transunet_rules_for_empty_masks():
    empty, blob = np.zeros((5, 5, 5), bool), np.zeros((5, 5, 5), bool)
    blob[1:3, 1:3, 1:3] = True
    assert metric_percase(empty, empty) == (0.0, 0.0)  # both empty → (0, 0), not (1, 0)
    assert metric_percase(blob, empty) == (1.0, 0.0)  # prediction only
    assert metric_percase(empty, blob) == (0.0, 0.0)  # missed organ: HD95 0 by TransUNet's rule
    assert metric_percase(blob, blob) == (1.0, 0.0)


def test_dice_by_hand():
    pred, gt = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    pred[0, 0:4] = True  # 4 pixels
    gt[0, 1:4] = True
    gt[1, 0:3] = True  # 6 pixels, 3 shared
    assert dice_coefficient(pred, gt) == pytest.approx(6 / 10)
    assert metric_percase(pred, gt)[0] == pytest.approx(0.6)


def test_hd95_single_voxels_and_spacing():
    a, b = np.zeros((8, 8, 8), bool), np.zeros((8, 8, 8), bool)
    a[2, 3, 3], b[5, 3, 3] = True, True
    assert hd95(a, b) == pytest.approx(3.0)
    assert hd95(a, b, spacing=(2.0, 1.0, 1.0)) == pytest.approx(6.0)


def test_hd95_shifted_cubes_by_hand():
    # two 4³ cubes 10 voxels apart along x: surface distances A→B are 10-a for the layers a = 0..3
    # (16, 12, 12, 16 voxels) and B→A 7+b likewise; the union's 95th percentile is 10
    a, b = np.zeros((20, 8, 8), bool), np.zeros((20, 8, 8), bool)
    a[2:6, 2:6, 2:6] = True
    b[12:16, 2:6, 2:6] = True
    assert hd95(a, b) == pytest.approx(10.0)
    assert hd95(a, b, spacing=(0.5, 1.0, 1.0)) == pytest.approx(5.0)
    # a cube shifted by one voxel: every surface voxel is 0 or 1 from the other surface (12 + 12 in 2D)
    c, d = np.zeros((10, 10), bool), np.zeros((10, 10), bool)
    c[2:6, 2:6], d[3:7, 2:6] = True, True
    assert hd95(c, d) == pytest.approx(1.0)


def test_hd95_is_the_percentile_of_the_union():
    # a voxel inside a 5-voxel line: A→B {0}, B→A {0, 1, 2, 3, 4}; np.percentile([0,0,1,2,3,4], 95) = 3.75
    # (MONAI's max of the directed 95th percentiles would give 3.8)
    a, b = np.zeros((9, 9, 12), bool), np.zeros((9, 9, 12), bool)
    a[4, 4, 4] = True
    b[4, 4, 4:9] = True
    assert hd95(a, b) == pytest.approx(3.75)
    assert hd95(b, a) == pytest.approx(3.75)


def _brute_hd95(a, b):
    def surface(m):
        padded = np.pad(m, 1)
        core = padded[1:-1, 1:-1, 1:-1].copy()
        for axis in range(3):
            for step in (-1, 1):
                core &= np.roll(padded, step, axis)[1:-1, 1:-1, 1:-1]
        return np.argwhere(m & ~core)

    sa, sb = surface(a), surface(b)
    dist = np.sqrt(((sa[:, None, :] - sb[None, :, :]) ** 2).sum(-1))
    return np.percentile(np.hstack([dist.min(1), dist.min(0)]), 95)


def test_hd95_matches_brute_force_on_random_masks():
    rng = np.random.default_rng(0)
    for _ in range(4):
        a = rng.random((7, 8, 9)) > 0.7
        b = rng.random((7, 8, 9)) > 0.8
        b[0, 0, 0] = a[6, 7, 8] = True  # surfaces touching the array border count
        assert hd95(a, b) == pytest.approx(_brute_hd95(a, b))


def test_case_metrics_per_class():
    gt = np.zeros((4, 6, 6), np.uint8)
    gt[1:3, 1:3, 1:3] = 1
    gt[0, 4:6, 4:6] = 2
    pred = gt.copy()
    pred[0, 4:6, 4:6] = 0  # class 2 missed
    pred[3, 0, 0] = 3  # class 3 predicted but absent
    table = case_metrics(torch.as_tensor(pred), gt, num_classes=4)
    assert table.shape == (3, 2)
    assert table.tolist() == [[1.0, 0.0], [0.0, 0.0], [1.0, 0.0]]


def test_csv_reports_class_columns_and_means(tmp_path):
    dice = np.array([[1.0, 0.5], [0.0, 0.5]])
    hd = np.array([[0.0, 4.0], [2.0, 6.0]])
    summary = write_case_metrics(tmp_path, ["case0001", "case0002"], dice, hd, ["background", "aorta", "liver"])
    rows = list(csv.reader(open(tmp_path / PER_CASE_CSV)))
    assert rows[0] == ["case", "metric", "aorta", "liver", "mean"]
    assert rows[1][:2] == ["case0001", "dice"] and float(rows[1][-1]) == 0.75
    assert rows[4][:2] == ["case0002", "hd95"] and float(rows[4][-1]) == 4.0
    rows = list(csv.reader(open(tmp_path / SUMMARY_CSV)))
    assert rows[0] == ["metric", "aorta", "liver", "mean"]
    assert [float(v) for v in rows[1][1:]] == [0.5, 0.5, 0.5] and [float(v) for v in rows[2][1:]] == [1.0, 5.0, 3.0]
    assert summary["mean_dice"] == 0.5 and summary["mean_hd95"] == 3.0


def test_monai_metric_accepts_labels_and_one_hot():
    gt = torch.zeros(2, 1, 3, 6, 6)
    gt[:, :, 1, 1:4, 1:4] = 1
    gt[0, :, 2, 4:6, 4:6] = 2
    pred = gt.clone()
    pred[1, :, 0, 0, 0] = 2  # case 2: class 2 predicted, absent → (1, 0)
    one_hot = torch.nn.functional.one_hot(pred[:, 0].long(), 3).movedim(-1, 1).float()
    dice, hd = TransUNetCaseMetric(3, "dice"), TransUNetCaseMetric(3, "hd95")
    dice(one_hot, gt)
    hd(pred, gt)
    assert dice.get_buffer().tolist() == [[1.0, 1.0], [1.0, 1.0]]
    assert float(dice.aggregate()) == 1.0 and hd.aggregate().item() == 0.0
    per_class = TransUNetCaseMetric(3, "dice", reduction="mean_batch")
    per_class(pred, gt)
    assert per_class.aggregate().tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="metric must be"):
        TransUNetCaseMetric(3, "iou")


# ------------------------------------------------------------------------------------------- slice-wise
def _net(in_channels=1, classes=4):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(in_channels, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, classes, 1))
    return net.eval()


def _transunet_loop(volume, net, patch):
    """TransUNet utils.test_single_volume: zoom order 3 in, argmax, zoom order 0 out, one slice at a time."""
    prediction = np.zeros(volume.shape, np.int64)
    for index in range(volume.shape[0]):
        image = volume[index]
        x, y = image.shape
        image = zoom(image, (patch[0] / x, patch[1] / y), order=3)
        with torch.no_grad():
            out = net(torch.from_numpy(image)[None, None].float()).argmax(1)[0].numpy()
        prediction[index] = zoom(out, (x / patch[0], y / patch[1]), order=0)
    return prediction


def _shifted_cubes(spacing):
    """One-hot (1, 2, 12, 12, 12) pair: a 4³ cube and the same cube 2 voxels further along the last axis."""
    pred, gt = torch.zeros(2, 1, 2, 12, 12, 12)
    pred[0, 1, 3:7, 3:7, 3:7] = gt[0, 1, 3:7, 3:7, 5:9] = 1
    pred[0, 0], gt[0, 0] = 1 - pred[0, 1], 1 - gt[0, 1]
    affine = torch.diag(torch.tensor([*spacing, 1.0], dtype=torch.float64))
    return MetaTensor(pred, affine=affine), MetaTensor(gt, affine=affine)


def test_hd95_mm_reads_the_spacing_from_the_affine():
    pred, gt = _shifted_cubes((0.8, 0.8, 2.5))
    assert voxel_spacing(gt)[0] == pytest.approx([0.8, 0.8, 2.5]) and voxel_spacing(gt.as_tensor()) is None
    assert PhysicalHausdorffDistanceMetric(percentile=95)(pred, gt).item() == pytest.approx(5.0)  # 2 voxels × 2.5 mm
    assert PhysicalHausdorffDistanceMetric(percentile=95)([pred[0]], [gt[0]]).item() == pytest.approx(5.0)  # decollated
    assert PhysicalHausdorffDistanceMetric(percentile=95)(pred.as_tensor(), gt.as_tensor()).item() == 2.0  # no meta
    explicit = PhysicalHausdorffDistanceMetric(percentile=95)(pred, gt, spacing=[1.0, 1.0, 1.0])
    assert explicit.item() == 2.0  # an explicit spacing wins
    rotated = torch.eye(4, dtype=torch.float64)
    rotated[:3, :3] = torch.tensor([[0.0, -0.8, 0.0], [0.8, 0.0, 0.0], [0.0, 0.0, 2.5]])  # RAS→LPS-like, same spacing
    assert voxel_spacing(MetaTensor(gt.as_tensor(), affine=rotated))[0] == pytest.approx([0.8, 0.8, 2.5])


def test_hd95_mm_handler_in_an_evaluator():
    pred, gt = _shifted_cubes((1.0, 1.0, 1.2))
    data = [{"image": pred[0], "pred": pred[0], "label": gt[0]}]
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(Dataset(data), batch_size=1),
        network=torch.nn.Identity(),
        inferer=lambda image, network: network(image),
        key_val_metric={"hd95": HausdorffDistanceMM(percentile=95, output_transform=from_engine(["pred", "label"]))},
    )
    evaluator.run()
    assert evaluator.state.metrics["hd95"] == pytest.approx(2.4)


def test_slicewise_equals_transunet_loop():
    volume = np.random.default_rng(0).random((5, 12, 10)).astype(np.float32)
    net = _net()
    expected = _transunet_loop(volume, net, (16, 16))
    labels = slicewise_inference(volume, net, roi_size=16, sw_batch_size=2)
    assert isinstance(labels, np.ndarray) and labels.shape == volume.shape
    assert np.array_equal(labels, expected)
    logits = slicewise_inference(torch.from_numpy(volume)[None], net, roi_size=16, output="logits", sw_batch_size=3)
    assert logits.shape == (4, 5, 12, 10) and torch.equal(logits.argmax(0), torch.from_numpy(expected))
    same_size = slicewise_inference(volume, net)  # no resizing at all
    with torch.no_grad():
        direct = net(torch.from_numpy(volume)[:, None]).argmax(1).numpy()
    assert np.array_equal(same_size, direct)


@pytest.mark.parametrize("axis", [1, 2])
def test_slicewise_other_axes_and_torch_modes(axis):
    volume = torch.rand(1, 1, 6, 7, 8)
    net = _net(3)
    inferer = SliceWiseInferer(roi_size=(8, 8), slice_axis=axis, sw_batch_size=4, input_mode="bilinear",
                               output_mode="nearest", repeat_channels=3)
    with torch.no_grad():
        out = inferer(volume, net)
        slices = volume[0].movedim(1 + axis, 0)  # (S, 1, H, W)
        manual = []
        for s in slices:
            x = torch.nn.functional.interpolate(s[None], size=(8, 8), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
            manual.append(torch.nn.functional.interpolate(net(x), size=s.shape[-2:], mode="nearest"))
    manual = torch.cat(manual).movedim(0, 1 + axis)[None]
    assert out.shape == (1, 4, 6, 7, 8) and torch.allclose(out, manual, atol=1e-6)


def test_slicewise_keeps_meta_and_applies_slice_transform():
    volume = MetaTensor(torch.rand(1, 1, 3, 8, 8) * 50 + 10, meta={"filename_or_obj": "vol.h5"})
    net = _net()
    out = SliceWiseInferer(output="labels", slice_transform=zscore_shift)(volume, net)
    assert isinstance(out, MetaTensor) and out.shape == (1, 1, 3, 8, 8)
    with torch.no_grad():
        expected = torch.stack([net(zscore_shift(s)[None]).argmax(1) for s in volume[0].as_tensor().movedim(1, 0)])
    assert torch.equal(out.as_tensor()[0, 0], expected[:, 0])
    with pytest.raises(ValueError, match="expects"):
        SliceWiseInferer()(torch.rand(1, 8, 8), net)


def test_evaluator_with_slicewise_inferer_writes_case_tables(tmp_path):
    rng = np.random.default_rng(1)
    items = []
    for k in range(2):
        image = torch.from_numpy(rng.random((1, 4, 10, 12)).astype(np.float32))
        items.append({"image": MetaTensor(image, meta={"filename_or_obj": f"/x/case000{k}.npy.h5"}),
                      "label": MetaTensor((image > 0.6).float() + (image > 0.85).float())})
    net = _net(classes=3)
    post = [AsDiscreted(keys="pred", argmax=True, to_onehot=3), AsDiscreted(keys="label", to_onehot=3)]
    handler = lambda metric: IgniteMetricHandler(  # noqa: E731
        TransUNetCaseMetric(3, metric), output_transform=from_engine(["pred", "label"]), save_details=True
    )
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(Dataset(items), batch_size=1),
        network=net,
        inferer=SliceWiseInferer(roi_size=16, sw_batch_size=3),
        postprocessing=Compose(post),
        key_val_metric={"val_mean_dice": handler("dice")},
        additional_metrics={"val_hd95": handler("hd95")},
        val_handlers=[CaseMetricsSaver(tmp_path, ["background", "a", "b"])],
    )
    evaluator.run()
    expected = np.stack(
        [case_metrics(slicewise_inference(i["image"][0].numpy(), net, roi_size=16), i["label"][0].numpy(), 3) for i in items]
    )
    assert evaluator.state.metrics["val_mean_dice"] == pytest.approx(expected[..., 0].mean(), abs=1e-6)
    assert evaluator.state.metrics["val_hd95"] == pytest.approx(expected[..., 1].mean(), abs=1e-5)
    rows = list(csv.reader(open(tmp_path / PER_CASE_CSV)))
    assert rows[0] == ["case", "metric", "a", "b", "mean"] and [r[0] for r in rows[1:]] == ["case0000"] * 2 + ["case0001"] * 2
    summary = list(csv.reader(open(tmp_path / SUMMARY_CSV)))
    assert float(summary[1][-1]) == pytest.approx(expected[..., 0].mean(), abs=1e-5)
