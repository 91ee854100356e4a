#!/usr/bin/env python3
"""Measure what attention costs: parameters, FLOPs, time and (on CUDA) peak memory, as ratios taken in one run.

    python ci/benchmark.py attention --spatial_dims 2 --channels 256 --size 32       # every registry module
    python ci/benchmark.py attention --spatial_dims 3 --channels 64 --size 16 --train --device cuda
    python ci/benchmark.py networks                                                   # every bundle's network
    python ci/benchmark.py networks pam_unet3d_hippocampus --train --output hippo.json
    python ci/benchmark.py wholect swinunetr_mam_flare nnformer_mam_flare --set sw_overlap 0   # whole-CT peak RSS
    python ci/benchmark.py finemem --sizes 128 256 512 --embed_dim 48     # FINE: cost per window as the volume grows
    python ci/benchmark.py compare --write      # every bundle network on CPU: docs/performance.md + a line per card

``attention`` times each registry module on a (batch, channels, size^d) input against a reference measured in the
same run: one k×k×(k) convolution channels → channels, the layer the modules are inserted next to. ``networks``
builds each bundle's ``network_def`` (from configs/inference.json, so exactly what the bundle runs) once per
attention variant (``VARIANTS``) and reports every variant against the bundle's attention-free baseline (for the MAM
bundles: ``memory=none``, i.e. SAM; a ``+plain`` variant runs the plain-math attention path instead of
scaled_dot_product_attention), at the bundle's ``roi_size`` unless ``--roi_size`` says otherwise.

Times are medians of ``--repeats`` passes (forward, or forward + backward with ``--train``), taken round-robin — one
pass of every candidate per round — so that load changes on a shared machine hit all candidates alike. Only the
ratios are meant to be compared, and only within one run (one device, one thread count). FLOPs follow the fvcore
rules of ``medattn_networks.engine.count_flops`` (one per multiply-add, forward only).

``wholect`` runs a bundle's own ``configs/inference.json`` (random weights: ``load_pretrain false``; one process:
``num_workers 0``) on one generated whole CT (512 × 512 × 200 at 0.8 × 0.8 × 2.5 mm unless ``--shape`` /
``--spacing`` say otherwise) and reports the inference process's peak resident memory (``wait4``'s ``ru_maxrss``)
and wall time. ``--set KEY VALUE`` passes bundle overrides (e.g. ``sw_overlap 0``: fewer windows, the same
stitching buffers).

``finemem`` runs FINE (``medattn_networks.nets.FINE``, BCV crop 64 × 128 × 128 unless ``--crop`` says otherwise) in
the position-aware sliding window (nnU-Net placement, step 0.5, no mirroring) over volumes of the crop's depth and
``--sizes`` in-plane, one fresh process per size, and reports the window count, wall time per window and in all, and
peak memory: on CUDA the device peak (windows run there, stitching on the CPU), on the CPU the process's peak RSS
minus what it held before the first window and minus the stitching buffers (computed from their shapes), i.e. the
working memory of one window. Flat per-window cost and total time proportional to the window count are FINE's claim.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import tempfile
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn as nn
from verify_bundles import REPO_ROOT, bundle_parser, bundle_path  # ci/ is on sys.path: this script's folder


SLICE_ATTENTION = ("sa", "pam", "sca", "csa")  # need the depth of their input
# take (skip, gate) with the same channels: the gate at half the size (attention gate) or at the same size (MASAG)
GATED_ATTENTION = {"ag": 2, "masag": 1}

# config id switched per bundle, and its values; the first value is the baseline the others are compared with
VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "pam_unet3d_hippocampus": ("attention", ("none", "cse", "pe", "ag", "sca", "csa", "pam")),
    "pam_unet3d_brats": ("attention", ("none", "cse", "pe", "ag", "sca", "csa", "pam")),
    "pam_vnet_brats": ("attention", ("none", "cse", "pe", "ag", "sca", "csa", "pam")),
    "dsnet_fcn_r50_synapse": ("model", ("fcn", "fcn+dsm", "dsnet", "fcn+se")),
    "dsnet_fcn_r50_acdc": ("model", ("fcn", "fcn+dsm", "dsnet", "fcn+se")),
    "swin_unet_mam_synapse": ("memory", ("none", "ists", "sts", "none+plain", "ists+plain")),
    "da_transunet_mam_synapse": ("memory", ("none", "sts", "none+plain", "sts+plain")),
    "swinunetr_mam_flare": ("memory", ("none", "ists", "none+plain", "ists+plain")),
    "nnformer_mam_flare": ("memory", ("none", "ists", "none+plain", "ists+plain")),
    "fine_btcv": ("wiring", ("released", "paper", "released+plain", "paper+plain")),
    "msa2net_synapse": ("decoder", ("released", "paper")),
    "msa2net_isic2018": ("decoder", ("released", "paper")),
}
# a "+plain" suffix runs the variant on the plain-math attention path instead of scaled_dot_product_attention
PLAIN_SUFFIX = "+plain"
# the network_def argument that selects scaled_dot_product_attention (MONAI's SwinUNETR names it its own way)
FUSED_ATTENTION_ARG = {"swinunetr_mam_flare": "use_flash_attention"}


def variant_overrides(switch: str, value: str, bundle: str = "") -> dict:
    """Config overrides of one benchmark variant (``value`` of ``switch``, optionally with the ``+plain`` suffix)."""
    if value.endswith(PLAIN_SUFFIX):
        return {switch: value[: -len(PLAIN_SUFFIX)], f"network_def#{FUSED_ATTENTION_ARG.get(bundle, 'fused_attention')}": False}
    return {switch: value}


@dataclass
class Measurement:
    """One benchmarked candidate; ``*_ratio`` are relative to the reference row of the same run."""

    name: str
    params: int
    flops: int
    time_ms: float
    peak_memory_mb: float | None = None
    params_ratio: float | None = None
    flops_ratio: float | None = None
    time_ratio: float | None = None
    memory_ratio: float | None = None


@dataclass
class Candidate:
    """What to run: ``step()`` does one timed pass; ``count_flops()`` returns the forward FLOPs."""

    name: str
    module: nn.Module
    step: Callable[[], None]
    count_flops: Callable[[], int]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _pass(module: nn.Module, make_inputs: Callable[[], tuple], train: bool) -> Callable[[], None]:
    """One forward (no grad) or forward + backward pass of ``module``.

    The inputs are made once, at the first call, so that no pass times the random number generator.
    """
    inputs: list[torch.Tensor] = []

    def step() -> None:
        if not inputs:
            inputs.extend(make_inputs())
        if train:
            out = module(*inputs)
            out.float().sum().backward()
            module.zero_grad(set_to_none=True)
            for x in inputs:
                x.grad = None
        else:
            with torch.no_grad():
                module(*inputs)

    return step


def time_candidates(candidates: Sequence[Candidate], device: torch.device, repeats: int, warmup: int) -> dict[str, float]:
    """Median seconds per ``step`` of each candidate, measured round-robin after ``warmup`` passes of each."""
    for candidate in candidates:
        for _ in range(warmup):
            candidate.step()
    _sync(device)
    seconds: dict[str, list[float]] = {c.name: [] for c in candidates}
    for _ in range(repeats):
        for candidate in candidates:
            _sync(device)
            start = time.perf_counter()
            candidate.step()
            _sync(device)
            seconds[candidate.name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}


def peak_memory_mb(candidate: Candidate, device: torch.device) -> float | None:
    """CUDA memory allocated at the peak of one pass, beyond what was allocated before it (None on CPU)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    candidate.step()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def _ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or reference == 0:
        return None
    return value / reference


def benchmark(candidates: Sequence[Candidate], reference: str, device: torch.device, repeats: int, warmup: int) -> list[Measurement]:
    """Measure every candidate in one run; ratios are taken against the candidate named ``reference``."""
    times = time_candidates(candidates, device, repeats, warmup)
    rows = []
    for candidate in candidates:
        params = sum(p.numel() for p in candidate.module.parameters())
        rows.append(Measurement(candidate.name, params, candidate.count_flops(), times[candidate.name] * 1e3, peak_memory_mb(candidate, device)))
    base = next(r for r in rows if r.name == reference)
    for row in rows:
        row.params_ratio = _ratio(row.params, base.params)
        row.flops_ratio = _ratio(row.flops, base.flops)
        row.time_ratio = _ratio(row.time_ms, base.time_ms)
        row.memory_ratio = _ratio(row.peak_memory_mb, base.peak_memory_mb)
    return rows


# ------------------------------------------------------------------------------------------ attention
def attention_candidates(
    spatial_dims: int,
    channels: int,
    size: int,
    batch: int,
    device: torch.device,
    train: bool,
    names: Sequence[str] | None = None,
    kernel_size: int = 3,
) -> tuple[list[Candidate], str]:
    """The reference convolution and one candidate per registry module (all of them, or ``names``)."""
    from medattn_networks.attention import create_attention, list_attention

    shape = (batch, channels, *([size] * spatial_dims))
    conv_type = (nn.Conv2d, nn.Conv3d)[spatial_dims - 2]
    reference = f"conv{kernel_size}x{kernel_size}" + (f"x{kernel_size}" if spatial_dims == 3 else "")
    modules: dict[str, nn.Module] = {reference: conv_type(channels, channels, kernel_size, padding=kernel_size // 2)}
    for name in names or list_attention():
        kwargs = {"depth": size} if name in SLICE_ATTENTION else {}
        modules[name] = create_attention(name, spatial_dims, channels, **kwargs)
    candidates = []
    for name, module in modules.items():
        module = module.to(device).train(train)
        gated = name in GATED_ATTENTION
        gate_shape = (batch, channels, *([max(size // GATED_ATTENTION.get(name, 1), 1)] * spatial_dims))

        def make_inputs(gated: bool = gated, gate_shape: tuple = gate_shape) -> tuple:
            x = torch.randn(shape, device=device, requires_grad=train)
            return (x, torch.randn(gate_shape, device=device, requires_grad=train)) if gated else (x,)

        forward = (lambda x, module=module, gate_shape=gate_shape: module(x, torch.randn(gate_shape))) if gated else None
        candidates.append(Candidate(name, module, _pass(module, make_inputs, train), _cpu_flops(module, shape, device, forward)))
    return candidates, reference


def _cpu_flops(module: nn.Module, shape: Sequence[int], device: torch.device, forward: Callable | None = None) -> Callable[[], int]:
    """Forward FLOPs of ``module`` on a fake CPU input of ``shape`` (the module returns to ``device`` afterwards)."""
    from medattn_networks.engine import count_flops

    def flops() -> int:
        module.cpu()
        try:
            return int(count_flops(module, shape, forward=forward))
        finally:
            module.to(device)

    return flops


# ------------------------------------------------------------------------------------------- networks
def network_candidates(
    bundle: str,
    device: torch.device,
    train: bool,
    batch: int = 1,
    roi_size: Sequence[int] | None = None,
    values: Sequence[str] | None = None,
) -> tuple[list[Candidate], str]:
    """One candidate per attention variant of ``bundle``'s inference ``network_def``; the baseline is the first."""
    if bundle not in VARIANTS:
        raise KeyError(f"no benchmark variants for bundle '{bundle}'; known: {', '.join(VARIANTS)}")
    switch, known = VARIANTS[bundle]
    chosen = list(values or known)
    unknown = [v for v in chosen if v not in known]
    if unknown:
        raise ValueError(f"{bundle}: unknown {switch} value(s) {unknown}; known: {', '.join(known)}")
    if known[0] not in chosen:
        chosen.insert(0, known[0])
    if roi_size is not None:
        bundle_roi = bundle_parser(bundle_path(bundle), "inference.json").get_parsed_content("roi_size")
        if len(roi_size) != len(bundle_roi):
            raise ValueError(f"{bundle}: --roi_size needs {len(bundle_roi)} values (its roi_size is {list(bundle_roi)}), got {list(roi_size)}")
    candidates = []
    for value in chosen:
        overrides = variant_overrides(switch, value, bundle)
        if roi_size is not None:
            overrides["roi_size"] = list(roi_size)
        parser = bundle_parser(bundle_path(bundle), "inference.json", overrides)
        network = parser.get_parsed_content("network_def").to(device).train(train)
        in_channels = parser.get_parsed_content("in_channels")
        shape = (batch, in_channels, *parser.get_parsed_content("roi_size"))

        def make_inputs(shape: tuple = shape) -> tuple:
            return (torch.randn(shape, device=device, requires_grad=train),)

        candidates.append(Candidate(f"{switch}={value}", network, _pass(network, make_inputs, train), _cpu_flops(network, shape, device)))
    return candidates, candidates[0].name


# ------------------------------------------------------------------------------------------------- CLI
def format_table(rows: Sequence[Measurement], title: str) -> str:
    """The measurements as a Markdown table (ratios to the reference row)."""
    from medattn_networks.engine import format_count

    def num(value: float | None, fmt: str) -> str:
        return "–" if value is None else format(value, fmt)

    def flops(value: int) -> str:
        unit = next((u for u, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)) if value >= scale), "")
        return format_count(value, unit) if unit else str(value)

    lines = [
        f"### {title}",
        "",
        "| name | params | × ref | FLOPs | × ref | ms | × ref | peak MiB | × ref |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | {r.params:,} | {num(r.params_ratio, '.3f')} | {flops(r.flops)} | {num(r.flops_ratio, '.3f')} "
            f"| {r.time_ms:.2f} | {num(r.time_ratio, '.2f')} | {num(r.peak_memory_mb, '.1f')} | {num(r.memory_ratio, '.2f')} |"
        )
    return "\n".join(lines)


def write_rows(rows: Sequence[Measurement], path: Path, context: dict) -> None:
    """``.json`` (context + rows) or ``.csv`` (one line per row, context repeated in each)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    records = [asdict(r) for r in rows]
    if path.suffix == ".json":
        path.write_text(json.dumps({"context": context, "rows": records}, indent=2) + "\n")
    elif path.suffix == ".csv":
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=[*context, *records[0]])
            writer.writeheader()
            writer.writerows({**context, **r} for r in records)
    else:
        raise ValueError(f"--output must end in .json or .csv, got '{path}'")


def whole_ct_inference(
    bundle: str, scan: Path, output_dir: Path, overrides: Sequence[tuple[str, str]] = (), threads: int | None = None
) -> dict:
    """Run ``bundle``'s inference.json on the folder holding ``scan``; its peak RSS (GiB), wall time and exit code."""
    folder = bundle_path(bundle)
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
        "--logging_file", "configs/logging.conf", "--dataset_dir", str(scan.parent), "--output_dir", str(output_dir),
        "--load_pretrain", "false", "--num_workers", "0",
    ]  # fmt: skip
    for key, value in overrides:
        cmd += [f"--{key}", value]
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    output_dir.mkdir(parents=True, exist_ok=True)
    log_path = output_dir / "inference.log"
    start = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(cmd, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    written = sorted(p.name for p in output_dir.glob("*_seg*"))
    return {
        "bundle": bundle,
        "overrides": dict(overrides),
        "peak_rss_gib": usage.ru_maxrss / 2**20,  # Linux reports KiB
        "seconds": seconds,
        "returncode": process.returncode,
        "outputs": written,
        "log": str(log_path),
    }


def _whole_ct(args: argparse.Namespace) -> int:
    from medattn_networks.data import make_ct_scan

    shape, spacing = tuple(args.shape), tuple(args.spacing)
    rows = []
    with tempfile.TemporaryDirectory(prefix="wholect_") as tmp:
        scan = make_ct_scan(Path(tmp) / "in" / "ct.nii.gz", shape, spacing)
        for bundle in args.bundles:
            print(f"{bundle}: inference on one {'x'.join(map(str, shape))} CT ...", file=sys.stderr, flush=True)
            row = whole_ct_inference(bundle, scan, Path(tmp) / bundle, args.set or (), args.threads)
            if row["returncode"] != 0:
                print(Path(row["log"]).read_text()[-3000:], file=sys.stderr)
                print(f"benchmark: {bundle} inference failed (exit {row['returncode']})", file=sys.stderr)
                return 1
            row.update(shape=list(shape), spacing=list(spacing))
            del row["log"]
            rows.append(row)
    print("| bundle | CT | overrides | peak RSS (GiB) | wall (s) |\n|---|---|---|---:|---:|")
    for row in rows:
        over = ", ".join(f"{k}={v}" for k, v in row["overrides"].items()) or "defaults"
        ct = f"{'×'.join(map(str, shape))} at {'×'.join(map(str, spacing))} mm"
        print(f"| {row['bundle']} | {ct} | {over} | {row['peak_rss_gib']:.2f} | {row['seconds']:.0f} |")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"context": {"torch": torch.__version__, "threads": args.threads}, "rows": rows}, indent=2) + "\n")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _fine_one(size: int, crop: Sequence[int], embed_dim: int, wiring: str, device: str, classes: int = 14) -> dict:
    """One FINE sliding-window pass over a (crop depth, size, size) volume; measured in this process."""
    import resource

    from medattn_networks.engine import PositionSlidingWindowInferer
    from medattn_networks.engine.position_inferer import nnunet_window_starts
    from medattn_networks.nets import FINE

    torch.manual_seed(0)
    dev = _device(device)
    net = FINE(img_size=crop, embed_dim=embed_dim, wiring=wiring, out_channels=classes).to(dev).eval()
    volume = torch.randn(1, 1, crop[0], size, size)
    padded = [crop[0], max(size, crop[1]), max(size, crop[2])]
    windows = 1
    for p, r in zip(padded, crop):
        windows *= len(nnunet_window_starts(p, r, 0.5))
    inferer = PositionSlidingWindowInferer(crop, placement="nnunet", step=0.5, mode="gaussian", sw_device=dev, device="cpu")
    calls: list[float] = []

    def timed(x: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        y = net(x, position)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        calls.append(time.perf_counter() - t0)
        return y

    with torch.no_grad():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # model and volume; no window run yet
        for _ in range(2):  # warm-up: one window's working memory is the same as any later one's
            net(torch.zeros(1, 1, *crop, device=dev))
        calls.clear()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
        start = time.perf_counter()
        out = inferer(volume, timed)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    voxels = padded[0] * padded[1] * padded[2]
    buffers = (classes + 1) * voxels * 4 + out.numel() * out.element_size()  # output + count map, and the cropped copy
    row = {
        "in_plane": size,
        "volume": [crop[0], size, size],
        "windows": windows,
        "seconds": seconds,
        "seconds_per_window": seconds / windows,
        "network_seconds_per_window": statistics.median(calls),
        "stitching_seconds": seconds - sum(calls),
        "peak_rss_gib": peak / 2**30,
        "rss_before_gib": before / 2**30,
        "stitch_buffers_gib": buffers / 2**30,
        "window_working_gib": max(peak - before - buffers, 0) / 2**30,
    }
    if dev.type == "cuda":
        row["device_peak_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
    return row


def _fine_memory(args: argparse.Namespace) -> int:
    if args.one is not None:
        print(json.dumps(_fine_one(args.one, args.crop, args.embed_dim, args.wiring, args.device)))
        return 0
    rows = []
    for size in args.sizes:
        cmd = [sys.executable, __file__, "finemem", "--one", str(size), "--crop", *map(str, args.crop),
               "--embed_dim", str(args.embed_dim), "--wiring", args.wiring, "--device", args.device]  # fmt: skip
        print(f"FINE sliding window over {args.crop[0]}x{size}x{size} ...", file=sys.stderr, flush=True)
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    first = rows[0]
    print("| in-plane | windows | network s / window (median) | × first | total s | × first (windows ×) | peak RSS GiB | window working GiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['in_plane']}² | {r['windows']} | {r['network_seconds_per_window']:.2f} | "
            f"{r['network_seconds_per_window'] / first['network_seconds_per_window']:.2f} | {r['seconds']:.1f} | "
            f"{r['seconds'] / first['seconds']:.2f} ({r['windows'] / first['windows']:.0f}) | {r['peak_rss_gib']:.2f} | "
            f"{r['window_working_gib']:.2f}" + (f" (device {r['device_peak_gib']:.2f})" if "device_peak_gib" in r else "") + " |"
        )
    if args.output:
        context = {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": args.device,
                   "crop": args.crop, "embed_dim": args.embed_dim, "wiring": args.wiring}  # fmt: skip
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"context": context, "rows": rows}, indent=2) + "\n")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


# -------------------------------------------------------------------------------------------- compare
MATMUL_SIZE = 2048  # the reference: one fp32 2048 × 2048 matmul (2048³ multiply-adds)
PERFORMANCE_DOC = REPO_ROOT / "docs" / "performance.md"
CARD_START, CARD_END = "<!-- performance:start -->", "<!-- performance:end -->"


def matmul_candidate(device: torch.device, size: int = MATMUL_SIZE) -> Candidate:
    """One fp32 ``size × size`` matmul: the machine's attainable multiply-add rate, measured in the same run."""
    a, b = (torch.randn(size, size, device=device) for _ in range(2))

    def step() -> None:
        torch.mm(a, b)

    return Candidate(f"matmul {size}²", nn.Identity(), step, lambda: size**3)


def _plain_value(bundle: str, parser) -> str | None:
    """The '+plain' variant of the bundle's default setting (every speed option off), if the bundle has one."""
    if bundle not in VARIANTS:
        return None
    switch, known = VARIANTS[bundle]
    default = str(parser.get_parsed_content(switch)) if switch in parser else None
    plain = f"{default}{PLAIN_SUFFIX}"
    return plain if plain in known else None


def compare_bundle(bundle: str, device: torch.device, train: bool, repeats: int, warmup: int) -> dict:
    """Time ``bundle``'s inference network at its bundle configuration (batch 1, or 2 with ``train``), with every
    speed option off where it has any, and a same-run matmul; returns the rows (multiply-add rates, the share of
    the matmul's rate) and this process's peak RSS."""
    import resource

    parser = bundle_parser(bundle_path(bundle), "inference.json")
    in_channels = parser.get_parsed_content("in_channels")
    roi = list(parser.get_parsed_content("roi_size"))
    batch = 2 if train else 1
    shape = (batch, in_channels, *roi)
    configs = {"default": {}}
    plain = _plain_value(bundle, parser)
    if plain is not None:
        switch = VARIANTS[bundle][0]
        configs["options off"] = variant_overrides(switch, plain, bundle)
    candidates = []
    for label, overrides in configs.items():
        network = bundle_parser(bundle_path(bundle), "inference.json", overrides).get_parsed_content("network_def").to(device).train(train)

        def make_inputs(shape: tuple = shape) -> tuple:
            return (torch.randn(shape, device=device, requires_grad=train),)

        candidates.append(Candidate(label, network, _pass(network, make_inputs, train), _cpu_flops(network, shape, device)))
    reference = matmul_candidate(device)
    times = time_candidates([*candidates, reference], device, repeats, warmup)
    matmul_rate = reference.count_flops() / times[reference.name]
    rows = []
    for candidate in candidates:
        macs = candidate.count_flops() * (3 if train else 1)  # backward ≈ 2 × forward
        rate = macs / times[candidate.name]
        rows.append({
            "name": candidate.name,
            "params": sum(p.numel() for p in candidate.module.parameters()),
            "gmacs": macs / 1e9,
            "ms": times[candidate.name] * 1e3,
            "gmacs_per_s": rate / 1e9,
            "matmul_share": rate / matmul_rate,
        })
    base = rows[0]["ms"]
    for row in rows:
        row["time_vs_default"] = row["ms"] / base
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return {
        "bundle": bundle,
        "input": list(shape),
        "rows": rows,
        "matmul_gmacs_per_s": matmul_rate / 1e9,
        "peak_rss_mib": peak,
        "threads": torch.get_num_threads(),
    }


def _machine() -> dict:
    """What the numbers were measured on."""
    import platform

    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        model = next((l.split(":", 1)[1].strip() for l in cpuinfo.read_text().splitlines() if l.startswith("model name")), "")
    return {"cpu": model or platform.processor(), "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version()}


def format_compare(results: Sequence[dict], context: dict) -> str:
    """docs/performance.md: one row per bundle network (and its options-off form)."""
    lines = [
        "# Speed on CPU",
        "",
        "Generated by `python ci/benchmark.py compare --write` (do not edit by hand). Each bundle network runs in a fresh",
        "process at its bundle configuration (`configs/inference.json`, batch 1, random weights), forward without",
        "gradients, round-robin with one fp32 2048 × 2048 matmul in the same process. The median of the rounds is",
        "reported. *share of matmul* is the network's multiply-add rate (fvcore rules, `engine.count_flops`) divided by",
        "the matmul's. *options off* is the same network with scaled_dot_product_attention off (its plain-math path),",
        "for the networks that have that option. Peak RSS is the whole measuring process (model, inputs, activations).",
        "",
        f"- Machine: {context['cpu']}, {context['cores']} cores; torch {context['torch']}, Python {context['python']}.",
        f"- Threads: {context['threads']}; load average {context['load_before']} before, {context['load_after']} after;"
        f" {context['repeats']} rounds after {context['warmup']} warm-up pass(es).",
        f"- Measured {context['date']}.",
        "",
        "| bundle | network | input | GMAC | ms | GMAC/s | share of matmul | time × default | peak RSS MiB |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        for row in result["rows"]:
            shape = "×".join(str(s) for s in result["input"][1:])
            lines.append(
                f"| `{result['bundle']}` | {row['name']} | {shape} | {row['gmacs']:.2f} | {row['ms']:.0f} | {row['gmacs_per_s']:.1f} "
                f"| {row['matmul_share']:.0%} | {row['time_vs_default']:.2f} | {result['peak_rss_mib']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def card_section(result: dict, context: dict) -> str:
    """The lines a model card carries between its performance markers."""
    rows = ", ".join(
        f"{row['name']}: {row['ms']:.0f} ms, {row['gmacs_per_s']:.1f} GMAC/s = {row['matmul_share']:.0%} of a same-run matmul"
        for row in result["rows"]
    )
    shape = "×".join(str(s) for s in result["input"][1:])
    return (
        f"{CARD_START}\n**Speed on CPU** (`python ci/benchmark.py compare --write`, {context['date']}; {context['cpu']}, "
        f"{context['threads']} threads): one {shape} forward pass at batch 1 — {rows}; peak RSS {result['peak_rss_mib']:.0f} MiB. "
        f"All bundles: docs/performance.md.\n{CARD_END}"
    )


def write_card_section(card: Path, section: str) -> bool:
    """Put ``section`` between the card's markers (replacing what was there) or, the first time, just before its
    "## MONAI Bundle Commands" heading (else at the end). Returns whether the card changed."""
    text = card.read_text()
    if CARD_START in text and CARD_END in text:
        head, rest = text.split(CARD_START, 1)
        new = head + section + rest.split(CARD_END, 1)[1]
    elif "\n## MONAI Bundle Commands" in text:
        head, rest = text.split("\n## MONAI Bundle Commands", 1)
        new = head.rstrip("\n") + "\n\n" + section + "\n\n## MONAI Bundle Commands" + rest
    else:
        new = text.rstrip("\n") + "\n\n" + section + "\n"
    if new != text:
        card.write_text(new)
    return new != text


def _compare(args: argparse.Namespace) -> int:
    from verify_bundles import list_bundles

    device = _device(args.device)
    if args.one:
        result = compare_bundle(args.one, device, args.train, args.repeats, args.warmup)
        Path(args.json).write_text(json.dumps(result, indent=2))
        return 0
    bundles = args.bundles or list_bundles()
    load_before = " ".join(f"{v:.2f}" for v in os.getloadavg())
    results = []
    for bundle in bundles:
        print(f"measuring {bundle}...", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "result.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), "compare", "--one", bundle, "--json", str(out),
                   "--device", args.device, "--repeats", str(args.repeats), "--warmup", str(args.warmup)]
            if args.train:
                cmd.append("--train")
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"benchmark: {bundle} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                return 1
            results.append(json.loads(out.read_text()))
        for row in results[-1]["rows"]:
            print(f"  {row['name']}: {row['ms']:.0f} ms, {row['matmul_share']:.0%} of matmul", file=sys.stderr)
    context = {
        **_machine(),
        "threads": results[0]["threads"] if results else torch.get_num_threads(),
        "load_before": load_before,
        "load_after": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "repeats": args.repeats,
        "warmup": args.warmup,
        "date": time.strftime("%Y-%m-%d"),
    }
    text = format_compare(results, context)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"context": context, "results": results}, indent=2) + "\n")
    if args.write:
        PERFORMANCE_DOC.parent.mkdir(parents=True, exist_ok=True)
        PERFORMANCE_DOC.write_text(text)
        for result in results:
            card = bundle_path(result["bundle"]) / "docs" / "README.md"
            if write_card_section(card, card_section(result, context)):
                print(f"updated {card}", file=sys.stderr)
    return 0


def _device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available on this machine")
    return device


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu | cuda | cuda:N")
    common.add_argument("--train", action="store_true", help="time forward + backward in train mode (default: forward, no grad)")
    common.add_argument("--repeats", type=int, default=10, help="timed rounds (median reported)")
    common.add_argument("--warmup", type=int, default=2, help="untimed passes of each candidate first")
    common.add_argument("--output", type=Path, help="also write the rows to this .json or .csv file")
    att = sub.add_parser("attention", parents=[common], help="every registry module against one convolution")
    att.add_argument("names", nargs="*", help="registry names (default: all)")
    att.add_argument("--spatial_dims", type=int, default=2, choices=(2, 3))
    att.add_argument("--channels", type=int, default=256)
    att.add_argument("--size", type=int, default=32, help="voxels per spatial side")
    att.add_argument("--batch", type=int, default=2, help="2 by default: DSM's SK BatchNorm cannot train on batch 1")
    net = sub.add_parser("networks", parents=[common], help="each bundle's network per attention variant")
    net.add_argument("bundles", nargs="*", help=f"bundle names (default: {', '.join(VARIANTS)})")
    net.add_argument("--values", nargs="+", help="only these variants (the baseline is always measured)")
    net.add_argument("--roi_size", type=int, nargs="+", help="input spatial size instead of the bundle's roi_size")
    net.add_argument("--batch", type=int, help="default 1, or 2 with --train (BatchNorm layers cannot train on batch 1)")
    ct = sub.add_parser("wholect", help="peak RSS of 3D bundles' inference on one whole CT")
    ct.add_argument("bundles", nargs="+", help="3D bundle names")
    ct.add_argument("--shape", type=int, nargs=3, default=[512, 512, 200], help="CT size (x, y, z as stored)")
    ct.add_argument("--spacing", type=float, nargs=3, default=[0.8, 0.8, 2.5], help="voxel size in mm")
    ct.add_argument("--set", nargs=2, action="append", metavar=("KEY", "VALUE"), help="a bundle override (repeatable)")
    ct.add_argument("--threads", type=int, help="OMP_NUM_THREADS of the inference process")
    ct.add_argument("--output", type=Path, help="also write the rows to this .json file")
    cp = sub.add_parser("compare", help="every bundle network: time, share of a same-run matmul, peak RSS")
    cp.add_argument("bundles", nargs="*", help="bundle names (default: every bundle)")
    cp.add_argument("--device", default="cpu", help="cpu (the point of this table) | cuda")
    cp.add_argument("--train", action="store_true", help="forward + backward at batch 2")
    cp.add_argument("--repeats", type=int, default=3, help="timed rounds (median reported)")
    cp.add_argument("--warmup", type=int, default=1, help="untimed passes of each candidate first")
    cp.add_argument("--output", type=Path, help="also write the results to this .json file")
    cp.add_argument("--write", action="store_true", help="write docs/performance.md and each bundle card's speed line")
    cp.add_argument("--one", help=argparse.SUPPRESS)
    cp.add_argument("--json", help=argparse.SUPPRESS)
    fm = sub.add_parser("finemem", help="FINE: time and memory per sliding window as the volume grows")
    fm.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512], help="in-plane volume sizes")
    fm.add_argument("--crop", type=int, nargs=3, default=[64, 128, 128], help="FINE's crop (z, y, x)")
    fm.add_argument("--embed_dim", type=int, default=192, help="FINE's first-stage width (192: BCV)")
    fm.add_argument("--wiring", default="paper", choices=("paper", "released"))
    fm.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    fm.add_argument("--one", type=int, help=argparse.SUPPRESS)
    fm.add_argument("--output", type=Path, help="also write the rows to this .json file")
    args = parser.parse_args(argv)
    if args.what == "wholect":
        return _whole_ct(args)
    if args.what == "finemem":
        return _fine_memory(args)
    if args.what == "compare":
        return _compare(args)
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    device = _device(args.device)
    context = {"device": str(device), "threads": torch.get_num_threads(), "train": args.train, "torch": torch.__version__}
    if device.type == "cuda":
        context["gpu"] = torch.cuda.get_device_name(device)
    all_rows: list[Measurement] = []
    try:
        if args.what == "attention":
            candidates, reference = attention_candidates(
                args.spatial_dims, args.channels, args.size, args.batch, device, args.train, args.names or None
            )
            context.update(spatial_dims=args.spatial_dims, channels=args.channels, size=args.size, batch=args.batch)
            jobs = [(f"attention, {args.spatial_dims}D, C={args.channels}, {args.size}^{args.spatial_dims}, batch {args.batch}", candidates, reference)]
        else:
            jobs = []
            batch = args.batch or (2 if args.train else 1)
            context.update(batch=batch, roi_size=args.roi_size or "bundle")
            for bundle in args.bundles or list(VARIANTS):
                candidates, reference = network_candidates(bundle, device, args.train, batch, args.roi_size, args.values)
                jobs.append((bundle, candidates, reference))
    except (KeyError, ValueError) as e:
        print(f"benchmark: {e}", file=sys.stderr)
        return 2
    for title, candidates, reference in jobs:
        print(f"measuring {len(candidates)} candidates of {title} on {device} ({args.repeats} rounds)...", file=sys.stderr, flush=True)
        rows = benchmark(candidates, reference, device, args.repeats, args.warmup)
        for row in rows:
            row.name = f"{title}: {row.name}" if args.what == "networks" and len(jobs) > 1 else row.name
        print(format_table(rows, f"{title} — ratios to {reference}, {'forward + backward' if args.train else 'forward'}, {device}") + "\n")
        all_rows += rows
    if args.output:
        write_rows(all_rows, args.output, context)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
