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
