"""ci/benchmark.py on tiny shapes: every candidate is measured, ratios are taken against the run's reference."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "ci"))

import benchmark as bm  # noqa: E402

from medattn_networks.attention import create_attention, list_attention  # noqa: E402
from medattn_networks.engine import count_params  # noqa: E402

TINY = ["--repeats", "1", "--warmup", "0"]


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_attention_benchmark_measures_every_registry_module(tmp_path, spatial_dims, capsys):
    out = tmp_path / "attention.json"
    channels, size, batch = 8, 8, 2
    argv = ["attention", "--spatial_dims", str(spatial_dims), "--channels", str(channels), "--size", str(size), "--output", str(out)]
    assert bm.main(argv + TINY) == 0
    report = json.loads(out.read_text())
    rows = {r["name"]: r for r in report["rows"]}
    reference = "conv3x3" if spatial_dims == 2 else "conv3x3x3"
    assert list(rows) == [reference, *list_attention()]
    assert report["context"]["spatial_dims"] == spatial_dims and report["context"]["device"] == "cpu"
    # the reference: fvcore counts one FLOP per multiply-add of the convolution (bias not counted)
    kernel = 3**spatial_dims
    assert rows[reference]["flops"] == batch * channels * channels * kernel * size**spatial_dims
    assert rows[reference]["params"] == channels * channels * kernel + channels
    assert rows[reference]["time_ratio"] == rows[reference]["flops_ratio"] == 1.0
    assert rows["none"]["params"] == 0 and rows["none"]["flops"] == 0
    for name in ("cse", "pam", "dsm"):
        kwargs = {"depth": size} if name == "pam" else {}
        assert rows[name]["params"] == count_params(create_attention(name, spatial_dims, channels, **kwargs))
        assert rows[name]["params_ratio"] == pytest.approx(rows[name]["params"] / rows[reference]["params"])
        assert rows[name]["time_ms"] > 0 and rows[name]["time_ratio"] == pytest.approx(rows[name]["time_ms"] / rows[reference]["time_ms"])
    table = capsys.readouterr().out
    assert f"ratios to {reference}" in table and "| pam |" in table


def test_network_benchmark_compares_variants_with_the_attention_free_baseline(tmp_path):
    out = tmp_path / "networks.csv"
    argv = ["networks", "pam_unet3d_hippocampus", "--roi_size", "16", "24", "16", "--values", "cse", "pam", "--output", str(out)]
    assert bm.main(argv + TINY) == 0
    with open(out, newline="") as f:
        rows = {r["name"]: r for r in csv.DictReader(f)}
    assert list(rows) == ["attention=none", "attention=cse", "attention=pam"]  # the baseline is always measured first
    assert float(rows["attention=none"]["time_ratio"]) == 1.0
    params = {name: int(r["params"]) for name, r in rows.items()}
    assert params["attention=none"] < params["attention=cse"] < params["attention=pam"]
    assert all(r["roi_size"] == "[16, 24, 16]" and r["batch"] == "1" for r in rows.values())


def test_network_benchmark_trains_a_batch_norm_network_at_batch_2(tmp_path):
    candidates, reference = bm.network_candidates("dsnet_fcn_r50_acdc", torch.device("cpu"), train=True, batch=2, roi_size=[32, 32], values=["fcn+dsm"])
    assert reference == "model=fcn" and [c.name for c in candidates] == ["model=fcn", "model=fcn+dsm"]
    rows = bm.benchmark(candidates, reference, torch.device("cpu"), repeats=1, warmup=0)
    assert rows[1].params > rows[0].params and rows[1].flops > rows[0].flops
    assert all(p.grad is None for p in candidates[1].module.parameters())  # each pass clears its gradients


def test_rounds_interleave_the_candidates():
    calls: list[str] = []
    candidates = [bm.Candidate(n, torch.nn.Identity(), lambda n=n: calls.append(n), lambda: 0) for n in ("a", "b", "c")]
    seconds = bm.time_candidates(candidates, torch.device("cpu"), repeats=3, warmup=1)
    assert calls == ["a", "b", "c"] + ["a", "b", "c"] * 3
    assert set(seconds) == {"a", "b", "c"} and all(s >= 0 for s in seconds.values())


@pytest.mark.parametrize(
    "argv, message",
    [
        (["networks", "dsnet_fcn_r50_acdc", "--roi_size", "16", "24", "16"], "--roi_size needs 2 values (its roi_size is [256, 256])"),
        (["networks", "pam_unet3d_hippocampus", "--values", "xyz"], "unknown attention value(s) ['xyz']"),
        (["networks", "no_such_bundle"], "no benchmark variants for bundle 'no_such_bundle'"),
        (["attention", "no_such_module", "--size", "4", "--channels", "4"], "no_such_module"),
    ],
)
def test_bad_arguments_are_named(argv, message, capsys):
    assert bm.main(argv + TINY) == 2
    assert message in capsys.readouterr().err


def test_every_bundle_has_benchmark_variants():
    bundles = sorted(p.name for p in (REPO_ROOT / "bundles").iterdir() if (p / "configs" / "inference.json").is_file())
    assert sorted(bm.VARIANTS) == bundles


def test_compare_measures_a_bundle_network_with_its_options_off_and_a_matmul():
    result = bm.compare_bundle("swin_unet_mam_synapse", torch.device("cpu"), train=False, repeats=1, warmup=0)
    rows = {r["name"]: r for r in result["rows"]}
    assert list(rows) == ["default", "options off"]  # options off: the plain-math attention path instead of SDPA
    assert result["input"] == [1, 3, 224, 224] and result["matmul_gmacs_per_s"] > 0 and result["peak_rss_mib"] > 100
    assert rows["default"]["params"] == rows["options off"]["params"] and rows["default"]["time_vs_default"] == 1.0
    for row in rows.values():
        # the share is the network's multiply-add rate over the matmul's, from the same run
        assert row["gmacs_per_s"] == pytest.approx(row["gmacs"] / (row["ms"] / 1e3))
        assert row["matmul_share"] == pytest.approx(row["gmacs_per_s"] / result["matmul_gmacs_per_s"])
    assert bm.compare_bundle("pam_unet3d_hippocampus", torch.device("cpu"), False, 1, 0)["rows"][0]["name"] == "default"


def test_compare_writes_the_table_and_one_line_per_card(tmp_path):
    context = {"cpu": "Test CPU", "cores": 2, "torch": "2.13.0", "python": "3.11", "threads": 2, "load_before": "0.10",
               "load_after": "0.20", "repeats": 3, "warmup": 1, "date": "2026-12-04"}
    result = {"bundle": "b", "input": [1, 1, 8, 8], "peak_rss_mib": 512.0, "threads": 2, "matmul_gmacs_per_s": 40.0,
              "rows": [{"name": "default", "params": 10, "gmacs": 1.5, "ms": 100.0, "gmacs_per_s": 15.0, "matmul_share": 0.375, "time_vs_default": 1.0}]}
    table = bm.format_compare([result], context)
    assert "| `b` | default | 1×8×8 | 1.50 | 100 | 15.0 | 38% | 1.00 | 512 |" in table and "Test CPU, 2 cores" in table
    card = tmp_path / "README.md"
    card.write_text("# b\n\n## Performance\n\ntext\n\n## MONAI Bundle Commands\n\ncmd\n")
    assert bm.write_card_section(card, bm.card_section(result, context))
    first = card.read_text()
    assert first.index(bm.CARD_START) < first.index("## MONAI Bundle Commands") and "38% of a same-run matmul" in first
    result["rows"][0]["matmul_share"] = 0.5
    assert bm.write_card_section(card, bm.card_section(result, context))  # replaced in place, not added again
    second = card.read_text()
    assert second.count(bm.CARD_START) == 1 and "50% of a same-run matmul" in second and "38%" not in second
    assert not bm.write_card_section(card, bm.card_section(result, context))
