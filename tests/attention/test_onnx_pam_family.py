"""ONNX export of the seed-001 modules: the exported graph must reproduce the eager output."""

import pytest
import torch

from medattn_networks.attention import create_attention

onnx = pytest.importorskip("onnx")  # pinned in requirements.txt
from onnx.reference import ReferenceEvaluator  # noqa: E402


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", ["cse", "pe", "ag", "sa", "pam", "sca", "csa"])
def test_onnx_export_matches_eager(tmp_path, name, spatial_dims):
    torch.manual_seed(0)
    kwargs = {"depth": 8} if name in ("sa", "pam", "sca", "csa") else {}
    module = create_attention(name, spatial_dims, 8, **kwargs).eval()
    x = torch.randn(1, 8, *([8] * spatial_dims))
    args = (x, torch.randn(1, 8, *([4] * spatial_dims))) if name == "ag" else (x,)
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(module, args, str(path), dynamo=False, opset_version=17)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    feeds = {inp.name: a.numpy() for inp, a in zip(model.graph.input, args)}
    (out,) = ReferenceEvaluator(model).run(None, feeds)
    with torch.no_grad():
        expected = module(*args).numpy()
    assert abs(out - expected).max() < 1e-5
