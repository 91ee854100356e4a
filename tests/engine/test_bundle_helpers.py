"""Helpers the bundle configs call: flag (CLI switches), pick (named options), slices_first_order."""

import numpy as np
import pytest

from medattn_networks.engine import flag, pick, slices_first_order


@pytest.mark.parametrize("value", [True, 1, "true", "True", "TRUE", "yes", "on", "1", " true "])
def test_flag_true(value):
    assert flag(value) is True


@pytest.mark.parametrize("value", [False, 0, "false", "False", "no", "OFF", "0"])
def test_flag_false(value):
    # the MONAI CLI hands '--load_pretrain false' over as the string "false", which bool() would call true
    assert flag(value) is False


@pytest.mark.parametrize("value", ["maybe", "", 2, None, 0.5])
def test_flag_rejects_other_values_naming_the_key(value):
    with pytest.raises(ValueError, match=r"'load_pretrain' must be true or false, got"):
        flag(value, "load_pretrain")


def test_pick_lists_the_known_names():
    assert pick({"fcn": 1, "dsnet": 2}, "dsnet") == 2
    with pytest.raises(ValueError, match=r"unknown model 'unet'; choose one of: fcn, dsnet"):
        pick({"fcn": 1, "dsnet": 2}, "unet", "model")


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slices_first_order_puts_the_slice_axis_first_and_reverses_the_plane(axis):
    volume = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    order = slices_first_order(axis)
    moved = volume.transpose(order)
    assert order[0] == 0 and moved.shape[1] == volume.shape[1 + axis]
    in_plane = [a for a in (2, 1, 0) if a != axis]
    assert moved.shape[2:] == (volume.shape[1 + in_plane[0]], volume.shape[1 + in_plane[1]])
    assert slices_first_order(2) == (0, 3, 2, 1)  # (C, x, y, z) -> (C, z, y, x), TransUNet's array order
    with pytest.raises(ValueError, match="slice_axis"):
        slices_first_order(3)


def _evaluator_state(details: dict):
    from types import SimpleNamespace

    return SimpleNamespace(state=SimpleNamespace(metrics={"val_mean_dice": 0.5}, metric_details=details))


def test_named_metrics_saver_writes_class_names(tmp_path):
    import torch

    from medattn_networks.engine import NamedMetricsSaver

    saver = NamedMetricsSaver(str(tmp_path), ["anterior", "posterior"], metrics="*", metric_details="*", summary_ops=["mean"])
    saver._filenames = ["a.nii.gz", "b.nii.gz"]
    saver(_evaluator_state({"val_mean_dice": torch.tensor([[0.8, 0.6], [0.9, 0.7]])}))
    raw = (tmp_path / "val_mean_dice_raw.csv").read_text().splitlines()
    assert raw[0] == "filename,anterior,posterior,mean"
    name, *values = raw[1].split(",")
    assert name == "a.nii.gz" and [float(v) for v in values] == pytest.approx([0.8, 0.6, 0.7])
    summary = (tmp_path / "val_mean_dice_summary.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in summary] == ["class", "anterior", "posterior", "mean"]
    assert (tmp_path / "metrics.csv").read_text().splitlines() == ["val_mean_dice,0.5"]


def test_named_metrics_saver_rejects_a_wrong_number_of_names(tmp_path):
    import torch

    from medattn_networks.engine import NamedMetricsSaver

    saver = NamedMetricsSaver(str(tmp_path), ["wt", "tc"], metric_details="*")
    saver._filenames = ["a.nii.gz"]
    with pytest.raises(ValueError, match=r"metric 'val_hd95' has 3 class channel\(s\) but class_names lists 2"):
        saver(_evaluator_state({"val_hd95": torch.zeros(1, 3)}))
    assert not (tmp_path / "val_hd95_raw.csv").exists()  # nothing half-written
