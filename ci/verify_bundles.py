#!/usr/bin/env python3
"""Verify the MONAI bundles under ``bundles/``: files, metadata, logging, network, workflows, TorchScript, multi-process.

In the spirit of the MONAI model-zoo's ``ci/verify_bundle.py`` plus its per-bundle unit tests, written for this
repository. Every check is a function that raises :class:`BundleCheckError` (an ``AssertionError`` whose message
starts with ``[<bundle>] <check>:``) so that ``tests/bundles`` can call them one by one; :func:`verify_bundle` runs
them in order and the CLI prints one line per check::

    python ci/verify_bundles.py                       # every bundle, checks a-f
    python ci/verify_bundles.py pam_vnet_brats        # one bundle
    python ci/verify_bundles.py --static              # checks a-d only (no training)
    python ci/verify_bundles.py --dist                # also the 2-process torchrun training (check g)

Checks per bundle:
    a. files       required files exist, every JSON config parses
       format      every configs/*.json formatted as the zoo's pre-commit pretty-format-json --indent=4
                   --no-sort-keys + end-of-file-fixer leave it (``--fix_format`` rewrites them)
    b. metadata    metadata.json against medattn_networks/zoo/meta_schema.json, name == folder, version == highest changelog key,
                   channel_def has num_channels entries
    c. logging     configs/logging.conf passes MONAI's allow-list and loads with logging.config.fileConfig
    d. net         network_def of train.json and inference.json: in/out channels and spatial shape vs. metadata;
                   the two configs build the same parameters (a training checkpoint loads for inference)
    e. workflows   on generated data in the dataset's published layout: train (ConfigWorkflow, check_properties),
                   evaluate (train.json + evaluate.json → metrics.csv with val_mean_dice), infer (one uint8 NIfTI per
                   input, with the input's shape and affine); then train + evaluate once more per layout variant
                   (e.g. the Synapse bundle on raw BTCV NIfTI: ``train[btcv]``, ``evaluate[btcv]``)
    f. torchscript ckpt_export of the trained checkpoint, torch.jit.load, compare with eager (atol 1e-4); a network
                   that does not script is reported as ``not scriptable: <reason>`` and must be documented in the
                   bundle's docs/README.md under a "TorchScript" heading
    g. dist        (``--dist``) torchrun training with 2 CPU processes: exit 0 and a checkpoint without ``module.``

Per-bundle small settings (data layout and shape, overrides) live in ci/bundle_test_settings.json: a new bundle only
adds an entry there. Layouts (see :data:`LAYOUTS`): msd, brats (3D NIfTI), synapse (TransUNet's train_npz /
test_vol_h5 / lists), btcv (raw BTCV img/ label/ NIfTI), acdc (SSL4MIS h5 slices and volumes, train_slices.list /
val.list). Outputs always go to a temporary folder: nothing under bundles/ is written.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import logging.config
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLES_DIR = REPO_ROOT / "bundles"
SCHEMA_FILE = REPO_ROOT / "medattn_networks" / "zoo" / "meta_schema.json"  # shipped with the package (medattn zoo verify)
SETTINGS_FILE = REPO_ROOT / "ci" / "bundle_test_settings.json"

CONFIG_NAMES = ("metadata.json", "train.json", "evaluate.json", "inference.json", "multi_gpu_train.json")
REQUIRED_FILES = ("LICENSE", "docs/README.md", *(f"configs/{n}" for n in CONFIG_NAMES), "configs/logging.conf")
TORCHSCRIPT_ATOL = 1e-4
# data layouts the verifier can generate: name -> what it writes
LAYOUTS = {
    "msd": "imagesTr/ labelsTr/ NIfTI (make_msd_task)",
    "brats": "<case>/<case>_{t1,t2,t1ce,flair,seg}.nii.gz (make_brats_cases)",
    "synapse": "TransUNet: train_npz/caseNNNN_sliceNNN.npz, test_vol_h5/caseNNNN.npy.h5, lists/lists_Synapse (make_synapse_transunet)",
    "btcv": "raw BTCV: img/imgNNNN.nii.gz (HU), label/labelNNNN.nii.gz (13 organ ids) (make_btcv_cases)",
    "acdc": "SSL4MIS h5: data/<case>_slice_<k>.h5, data/<case>.h5, train_slices.list, val.list (make_acdc_h5)",
    "isic": "ISIC 2018 Task 1: ISIC2018_Task1-2_{Training,Validation,Test}_Input/ISIC_<id>.jpg, ..._GroundTruth/ISIC_<id>_segmentation.png (make_isic2018)",
}

__all__ = [
    "BundleCheckError",
    "CheckResult",
    "ScriptResult",
    "list_bundles",
    "bundle_path",
    "load_settings",
    "variant_settings",
    "LAYOUTS",
    "check_required_files",
    "check_metadata",
    "check_logging_conf",
    "check_net_in_out",
    "make_training_data",
    "make_inference_inputs",
    "run_training",
    "run_evaluation",
    "run_inference",
    "check_inference_outputs",
    "export_torchscript",
    "torchscript_doc_section",
    "check_torchscript_documented",
    "run_dist_training",
    "verify_bundle",
    "main",
]


class BundleCheckError(AssertionError):
    """A failed check; the message names the bundle and the check."""

    def __init__(self, bundle: str, check: str, message: str) -> None:
        super().__init__(f"[{bundle}] {check}: {message}")
        self.bundle, self.check, self.problem = bundle, check, message


@dataclass
class CheckResult:
    bundle: str
    check: str
    ok: bool
    message: str = ""
    seconds: float = 0.0


@dataclass
class ScriptResult:
    """Outcome of the TorchScript export of one bundle."""

    scriptable: bool
    reason: str = ""  # one line, for "not scriptable: <reason>"
    names: list[str] = field(default_factory=list)  # functions / classes the TorchScript error points at
    detail: str = ""  # the full compiler message
    max_abs_diff: float | None = None  # scripted vs. eager, when scriptable
    trace_note: str = ""  # result of the tracing fallback, when not scriptable
    ts_file: str = ""

    def summary(self) -> str:
        if self.scriptable:
            return f"scripted, max |ts - eager| = {self.max_abs_diff:.2e}"
        return f"not scriptable: {self.reason}" + (f" [{self.trace_note}]" if self.trace_note else "")


# ------------------------------------------------------------------------------------------------- helpers
def list_bundles(bundles_dir: Path = BUNDLES_DIR) -> list[str]:
    """Names of the bundle folders (every sub-folder of bundles/ that is not hidden)."""
    return sorted(p.name for p in Path(bundles_dir).iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def bundle_path(bundle: str, bundles_dir: Path = BUNDLES_DIR) -> Path:
    path = Path(bundles_dir) / bundle
    if not path.is_dir():
        raise BundleCheckError(bundle, "files", f"no bundle folder '{path}'")
    return path


def _fail(bundle: str, check: str, message: str) -> None:
    raise BundleCheckError(bundle, check, message)


def _read_json(bundle: str, path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        _fail(bundle, "files", f"missing {path}")
    except json.JSONDecodeError as e:
        _fail(bundle, "files", f"{path} is not valid JSON: {e}")


def load_settings(bundle: str, settings_file: Path = SETTINGS_FILE) -> dict:
    """The bundle's entry of ci/bundle_test_settings.json with the defaults filled in."""
    all_settings = json.loads(Path(settings_file).read_text())
    entries = all_settings.get("bundles", {})
    if bundle not in entries:
        _fail(bundle, "settings", f"no entry for '{bundle}' in {settings_file}: add its layout, data_shape and overrides")
    defaults = all_settings.get("defaults", {})
    entry = dict(entries[bundle])
    for key, value in defaults.items():
        if isinstance(value, dict):
            entry[key] = {**value, **entry.get(key, {})}
        else:
            entry.setdefault(key, value)
    for key in ("layout", "data_shape"):
        if key not in entry:
            _fail(bundle, "settings", f"{settings_file} entry lacks '{key}'")
    layouts = [entry["layout"], *(v.get("layout", entry["layout"]) for v in entry.get("variants", {}).values())]
    for layout in layouts:
        if layout not in LAYOUTS:
            _fail(bundle, "settings", f"layout must be one of {', '.join(LAYOUTS)}, got '{layout}'")
    return entry


def variant_settings(settings: dict, variant: str) -> dict:
    """The settings of one entry of ``settings["variants"]``: its layout / data_shape / num_cases replace the
    bundle's, its overrides, train_overrides and infer_overrides are merged over the bundle's."""
    variants = settings.get("variants", {})
    if variant not in variants:
        raise KeyError(f"no variant '{variant}' (known: {', '.join(variants) or 'none'})")
    spec = variants[variant]
    merged = {k: v for k, v in settings.items() if k != "variants"}
    for key, value in spec.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _version_tuple(version: str):
    """Semantic order of bundle versions: the zoo's (numeric parts as numbers, a pre-release before its release)."""
    from medattn_networks.zoo.versions import version_key

    return version_key(version)


def _configs(bundle_dir: Path) -> Path:
    return Path(bundle_dir) / "configs"


def _overrides(settings: dict, kind: str) -> dict:
    """Overrides for kind 'net' (network only), 'train' (train/evaluate) or 'infer'."""
    result = dict(settings.get("overrides", {}))
    if kind == "train":
        result.update(settings.get("train_overrides", {}))
    elif kind == "infer":
        result.update(settings.get("infer_overrides", {}))
    return result


def bundle_parser(bundle_dir: Path, config_files: str | Sequence[str], overrides: dict | None = None):
    """A ConfigParser of the bundle's ``config_files`` (under configs/) and metadata, with ``overrides`` applied."""
    from monai.bundle import ConfigParser

    configs = _configs(bundle_dir)
    files = [config_files] if isinstance(config_files, str) else list(config_files)
    parser = ConfigParser()
    parser.read_config([str(configs / f) for f in files])
    parser.read_meta(str(configs / "metadata.json"))
    parser.update({"bundle_root": str(bundle_dir), **(overrides or {})})
    return parser


def _workflow(bundle_dir: Path, workflow_type: str, config_files: Sequence[str], overrides: dict):
    from monai.bundle import ConfigWorkflow

    configs = _configs(bundle_dir)
    files = [str(configs / f) for f in config_files]
    return ConfigWorkflow(
        workflow_type=workflow_type,
        config_file=files[0] if len(files) == 1 else files,
        meta_file=str(configs / "metadata.json"),
        logging_file=str(configs / "logging.conf"),
        **{"bundle_root": str(bundle_dir), **overrides},
    )


def _initialize_checked(bundle: str, check: str, workflow) -> None:
    workflow.initialize()
    missing = workflow.check_properties()
    if missing:
        _fail(bundle, check, f"ConfigWorkflow.check_properties() reports missing or wrongly named properties: {missing}")


def _metadata(bundle_dir: Path) -> dict:
    return _read_json(Path(bundle_dir).name, _configs(bundle_dir) / "metadata.json")


# ------------------------------------------------------------------------------------------- a. files
def check_required_files(bundle_dir: Path) -> list[str]:
    """Every required file exists and every JSON config parses; returns the files checked."""
    bundle_dir = Path(bundle_dir)
    bundle = bundle_dir.name
    missing = [f for f in REQUIRED_FILES if not (bundle_dir / f).is_file()]
    if missing:
        _fail(bundle, "files", f"missing {', '.join(missing)} in {bundle_dir}")
    for path in sorted(_configs(bundle_dir).glob("*.json")):
        _read_json(bundle, path)
    empty = [f for f in ("LICENSE", "docs/README.md") if not (bundle_dir / f).read_text().strip()]
    if empty:
        _fail(bundle, "files", f"empty {', '.join(empty)}")
    return list(REQUIRED_FILES)


def format_config(text: str) -> str:
    """``text`` as the model zoo's pre-commit hook pretty-format-json (--indent=4 --no-sort-keys) and
    end-of-file-fixer leave it: 4-space indent, keys in their order, ASCII escapes, one final newline."""
    return json.dumps(json.loads(text), indent=4) + "\n"


def check_config_format(bundle_dir: Path, fix: bool = False) -> int:
    """Every configs/*.json is formatted as :func:`format_config` does (``fix``: rewrite those that are not)."""
    bundle_dir = Path(bundle_dir)
    unformatted = []
    files = sorted(_configs(bundle_dir).glob("*.json"))
    for path in files:
        text = path.read_text()
        formatted = format_config(text)
        if text != formatted:
            if fix:
                path.write_text(formatted)
            else:
                unformatted.append(path.name)
    if unformatted:
        _fail(
            bundle_dir.name,
            "format",
            f"{', '.join(unformatted)} not formatted as pretty-format-json --indent=4 --no-sort-keys with a final newline "
            "(python ci/verify_bundles.py --fix_format rewrites them)",
        )
    return len(files)


# ---------------------------------------------------------------------------------------- b. metadata
def check_metadata(bundle_dir: Path, schema_file: Path = SCHEMA_FILE) -> dict:
    """metadata.json against the schema plus the rules a JSON schema cannot express; returns the metadata."""
    import jsonschema

    bundle_dir = Path(bundle_dir)
    bundle = bundle_dir.name
    meta = _metadata(bundle_dir)
    schema = json.loads(Path(schema_file).read_text())
    validator_cls = jsonschema.validators.validator_for(schema)
    errors = sorted(validator_cls(schema).iter_errors(meta), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors[:10]]
        _fail(bundle, "metadata", f"metadata.json does not match {schema_file.name}: " + "; ".join(lines))
    if meta["name"] != bundle:
        _fail(bundle, "metadata", f"name '{meta['name']}' differs from the folder name '{bundle}'")
    version, changelog = meta["version"], meta["changelog"]
    if version not in changelog:
        _fail(bundle, "metadata", f"version {version} is not a key of changelog ({', '.join(changelog)})")
    highest = max(changelog, key=_version_tuple)
    if _version_tuple(highest) != _version_tuple(version):
        _fail(bundle, "metadata", f"version {version} is not the highest changelog entry ({highest})")
    for kind, key in (("inputs", "image"), ("outputs", "pred")):
        spec = meta["network_data_format"][kind][key]
        expected = {str(i) for i in range(spec["num_channels"])}
        if set(spec["channel_def"]) != expected:
            _fail(
                bundle,
                "metadata",
                f"network_data_format.{kind}.{key}.channel_def has keys {sorted(spec['channel_def'])}, "
                f"expected one per channel: {sorted(expected)}",
            )
    return meta


# ----------------------------------------------------------------------------------------- c. logging
def check_logging_conf(bundle_dir: Path) -> None:
    """configs/logging.conf passes MONAI 1.6.1's allow-list and loads with fileConfig (logging state restored)."""
    bundle_dir = Path(bundle_dir)
    bundle = bundle_dir.name
    path = _configs(bundle_dir) / "logging.conf"
    content = path.read_text()
    try:
        from monai.bundle import workflows

        validate = getattr(workflows, "_reject_executable_logging_config", None)
        if validate is not None:
            content = validate(str(path))
    except Exception as e:  # noqa: BLE001 - any rejection is the finding
        _fail(bundle, "logging", f"{path} is rejected by MONAI's logging-config check: {e}")
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    try:
        logging.config.fileConfig(io.StringIO(content), disable_existing_loggers=False)
        if not root.handlers:
            _fail(bundle, "logging", f"{path} configures no handler on the root logger")
    except BundleCheckError:
        raise
    except Exception as e:  # noqa: BLE001
        _fail(bundle, "logging", f"{path} does not load with logging.config.fileConfig: {type(e).__name__}: {e}")
    finally:
        for handler in list(root.handlers):
            if handler not in saved[1]:
                root.removeHandler(handler)
                handler.close()
        for handler in saved[1]:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(saved[0])


# --------------------------------------------------------------------------------------------- d. net
def _net_input_shape(settings: dict, parser) -> list[int]:
    if "net_input_shape" in settings:
        return list(settings["net_input_shape"])
    if "roi_size" in parser:
        return list(parser.get_parsed_content("roi_size"))
    raise KeyError("set 'net_input_shape' in the bundle's test settings (the config has no roi_size)")


def check_net_in_out(bundle_dir: Path, settings: dict) -> dict:
    """Build network_def from train.json and inference.json, forward a random tensor, compare with the metadata.

    Returns ``{config: output shape}``.
    """
    import torch

    bundle_dir = Path(bundle_dir)
    bundle = bundle_dir.name
    meta = _metadata(bundle_dir)
    fmt = meta["network_data_format"]
    in_channels = fmt["inputs"]["image"]["num_channels"]
    out_channels = fmt["outputs"]["pred"]["num_channels"]
    shapes, params = {}, {}
    for config in ("train.json", "inference.json"):
        parser = bundle_parser(bundle_dir, config, _overrides(settings, "net"))
        try:
            net = parser.get_parsed_content("network_def")
        except Exception as e:  # noqa: BLE001
            _fail(bundle, "net", f"network_def of {config} cannot be built: {type(e).__name__}: {e}")
        spatial = _net_input_shape(settings, parser)
        x = torch.randn(1, in_channels, *spatial)
        net.eval()
        try:
            with torch.no_grad():
                y = net(x)
        except Exception as e:  # noqa: BLE001
            _fail(bundle, "net", f"network_def of {config} fails on input {tuple(x.shape)}: {type(e).__name__}: {e}")
        if y.shape[1] != out_channels:
            _fail(bundle, "net", f"{config}: {y.shape[1]} output channels, metadata outputs.pred says {out_channels}")
        if tuple(y.shape[2:]) != tuple(x.shape[2:]):
            _fail(bundle, "net", f"{config}: output spatial shape {tuple(y.shape[2:])} != input {tuple(x.shape[2:])}")
        shapes[config] = tuple(y.shape)
        params[config] = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        # the full-size configuration must agree with the metadata too (checked without building the network)
        full = bundle_parser(bundle_dir, config)
        if "in_channels" in full and full.get_parsed_content("in_channels") != in_channels:
            _fail(bundle, "net", f"{config} in_channels differs from metadata inputs.image.num_channels {in_channels}")
        if "num_classes" in full and full.get_parsed_content("num_classes") != out_channels:
            _fail(bundle, "net", f"{config} num_classes differs from metadata outputs.pred.num_channels {out_channels}")
        declared = fmt["inputs"]["image"]["spatial_shape"]
        if "roi_size" in full and all(isinstance(s, int) for s in declared):
            roi = list(full.get_parsed_content("roi_size"))
            if roi != list(declared):
                _fail(bundle, "net", f"{config} roi_size {roi} differs from metadata inputs.image.spatial_shape {declared}")
    if params["train.json"] != params["inference.json"]:
        diff = set(params["train.json"].items()) ^ set(params["inference.json"].items())
        _fail(bundle, "net", f"train.json and inference.json build different parameters, e.g. {sorted(diff)[:3]}")
    return shapes


# ------------------------------------------------------------------------------------ e. data + workflows
def _split_counts(settings: dict) -> tuple[int, int]:
    """(training, validation) case counts of the 2D-slice layouts: ``num_val`` of train_overrides validates."""
    total = int(settings["num_cases"])
    num_val = settings.get("train_overrides", {}).get("num_val") or max(1, total // 2)
    if not 0 < num_val < total:
        raise ValueError(f"num_cases {total} must exceed num_val {num_val}")
    return total - num_val, num_val


def _acdc_cases(count: int, first_patient: int) -> list[str]:
    """patientNNN_frame01 / _frame02 pairs, as the shared ACDC copy names them."""
    return [f"patient{first_patient + i // 2:03d}_frame{1 + i % 2:02d}" for i in range(count)]


def make_training_data(settings: dict, root: Path) -> Path:
    """Labelled cases in the dataset's published layout (see :data:`LAYOUTS`) under ``root``.

    For synapse / btcv the training cases are the first of TransUNet's 18 (case0005, case0006, ...) and the
    validation cases the first of its 12 test cases (case0008, case0022, ...); ``data_shape`` is (x, y, z) of the
    CT volumes. For acdc the cases are patient001_frame01, _frame02, patient002_frame01, ... (validation after
    training) and ``data_shape`` is (slices, H, W) of the h5 volumes. For isic the training folder gets the
    training cases and the validation and test folders ``num_val`` each; ``data_shape`` is (H, W) of the images.
    """
    from medattn_networks.data import (
        SYNAPSE_TEST_CASES,
        SYNAPSE_TRAIN_CASES,
        make_acdc_h5,
        make_brats_cases,
        make_btcv_cases,
        make_isic2018,
        make_msd_task,
        make_synapse_transunet,
    )

    root = Path(root)
    layout, shape = settings["layout"], tuple(settings["data_shape"])
    if layout == "msd":
        return make_msd_task(root, settings["num_cases"], shape=shape)
    if layout == "brats":
        return make_brats_cases(root, settings["num_cases"], shape=shape)
    num_train, num_val = _split_counts(settings)
    if layout in ("synapse", "btcv"):
        train, test = SYNAPSE_TRAIN_CASES[:num_train], SYNAPSE_TEST_CASES[:num_val]
        if layout == "synapse":
            return make_synapse_transunet(root, train, test, shape=shape)
        return make_btcv_cases(root, (*train, *test), shape=shape)
    if layout == "acdc":
        cases = _acdc_cases(num_train + num_val, 1)
        return make_acdc_h5(root, cases[:num_train], cases[num_train:], shape=shape)
    if layout == "isic":
        return make_isic2018(root, {"train": num_train, "val": num_val, "test": num_val}, size=shape)
    raise ValueError(f"unknown layout '{layout}'")


@dataclass
class InferenceInput:
    source: Path  # the file or case folder given to the bundle
    reference: Path  # a NIfTI file whose (spatial) shape and affine the output must have (2D images: the image)
    output_stem: str  # output file name without postfix and extension


def make_inference_inputs(settings: dict, root: Path, in_channels: int) -> list[InferenceInput]:
    """Unlabelled inputs for the inference config: NIfTI files (MSD), case folders plus one 4D file (BraTS), or
    single-channel NIfTI volumes for the 2D-slice bundles (synapse / btcv: CT in HU, not RAS; acdc: cine MR,
    oblique and not RAS) — their networks' 3 input channels are the grey slice repeated, so ``in_channels`` is
    not the files' channel count there; isic: RGB JPEG and PNG images of differing sizes in a flat folder."""
    from medattn_networks.data import make_brats_cases, make_btcv_cases, make_image_folder, make_mr_nifti_folder, make_nifti_folder

    root = Path(root)
    shape = tuple(settings["data_shape"])
    count = settings["num_infer_inputs"]
    if settings["layout"] == "isic":
        return [InferenceInput(p, p, p.stem) for p in make_image_folder(root, count, size=shape, seed=11)]
    if settings["layout"] in ("synapse", "btcv"):
        make_btcv_cases(root / "_ct", [f"case{9000 + i:04d}" for i in range(count)], shape=shape, seed=11, with_label=False)
        for path in sorted((root / "_ct" / "img").glob("*.nii.gz")):
            shutil.move(str(path), root / path.name)
        shutil.rmtree(root / "_ct")
        return [InferenceInput(p, p, p.name[: -len(".nii.gz")]) for p in sorted(root.glob("*.nii.gz"))]
    if settings["layout"] == "acdc":
        make_mr_nifti_folder(root, count, shape=(shape[2], shape[1], shape[0]), seed=11)
        return [InferenceInput(p, p, p.name[: -len(".nii.gz")]) for p in sorted(root.glob("*.nii.gz"))]
    if settings["layout"] == "msd":
        make_nifti_folder(root, count, shape=shape, channels=in_channels, seed=11)
        return [InferenceInput(p, p, p.name[: -len(".nii.gz")]) for p in sorted(root.glob("*.nii.gz"))]
    make_brats_cases(root, count, shape=shape, seed=12, grades=(), with_label=False)
    inputs = [InferenceInput(c, c / f"{c.name}_flair.nii.gz", c.name) for c in sorted(p for p in root.iterdir() if p.is_dir())]
    make_nifti_folder(root / "_4d", 1, shape=shape, channels=in_channels, seed=13)
    single = root / "image_4d.nii.gz"
    shutil.move(str(root / "_4d" / "image_0.nii.gz"), single)
    (root / "_4d").rmdir()
    inputs.append(InferenceInput(single, single, "image_4d"))
    return inputs


def run_training(
    bundle_dir: Path,
    settings: dict,
    dataset_dir: Path,
    ckpt_dir: Path,
    output_dir: Path,
    extra_overrides: dict | None = None,
    on_initialized: Callable[[Any], None] | None = None,
):
    """ConfigWorkflow('train') → initialize → check_properties == [] → run → finalize; returns the workflow.

    ``on_initialized(workflow)`` runs after the property check (e.g. to attach a handler to the trainer).
    """
    import torch

    bundle_dir = Path(bundle_dir)
    bundle = bundle_dir.name
    overrides = {
        **_overrides(settings, "train"),
        "dataset_dir": str(dataset_dir),
        "ckpt_dir": str(ckpt_dir),
        "run_dir": str(ckpt_dir),
        "output_dir": str(output_dir),
        **(extra_overrides or {}),
    }
    workflow = _workflow(bundle_dir, "train", ["train.json"], overrides)
    _initialize_checked(bundle, "train", workflow)
    if on_initialized is not None:
        on_initialized(workflow)
    try:
        workflow.run()
    finally:
        workflow.finalize()
    ckpt = Path(ckpt_dir) / "model.pt"
    if not ckpt.is_file():
        _fail(bundle, "train", f"training finished but wrote no checkpoint {ckpt}")
    for name in ("model_final.pt", "best.json"):
        if not (Path(ckpt_dir) / name).is_file():
            _fail(bundle, "train", f"training finished but its run folder {ckpt_dir} lacks {name}")
    if not list(Path(ckpt_dir).glob("state_epoch*.pt")):
        _fail(bundle, "train", f"training finished but its run folder {ckpt_dir} holds no training state (state_epoch<N>.pt)")
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        _fail(bundle, "train", f"{ckpt} does not load with weights_only=True (CheckpointLoader needs that): {e}")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        _fail(bundle, "train", f"{ckpt} is not a plain state dict of tensors")
    return workflow


def read_metrics_csv(path: Path) -> dict[str, float]:
    """MetricsSaver's metrics.csv (``name<delimiter>value`` lines) as a dict."""
    text = Path(path).read_text()
    delimiter = "\t" if "\t" in text else ","
    return {row[0]: float(row[1]) for row in csv.reader(io.StringIO(text), delimiter=delimiter) if len(row) >= 2}


def run_evaluation(
    bundle_dir: Path, settings: dict, dataset_dir: Path, ckpt_path: Path, output_dir: Path, extra_overrides: dict | None = None
) -> dict[str, float]:
    """train.json + evaluate.json with ``ckpt_path``; returns metrics.csv (which must hold a finite val_mean_dice)."""
    import math

    bundle_dir = Path(bundle_dir)
    bundle = bundle_dir.name
    overrides = {
        **_overrides(settings, "train"),
        "dataset_dir": str(dataset_dir),
        "ckpt_dir": str(Path(output_dir) / "_ckpt_unused"),
        "run_dir": str(Path(output_dir) / "_run_unused"),
        "ckpt_path": str(ckpt_path),
        "output_dir": str(output_dir),
        **(extra_overrides or {}),
    }
    workflow = _workflow(bundle_dir, "train", ["train.json", "evaluate.json"], overrides)
    _initialize_checked(bundle, "evaluate", workflow)
    try:
        workflow.run()
    finally:
        workflow.finalize()
    metrics_file = Path(output_dir) / "metrics.csv"
    if not metrics_file.is_file():
        _fail(bundle, "evaluate", f"evaluation wrote no {metrics_file}")
    metrics = read_metrics_csv(metrics_file)
    dice = metrics.get("val_mean_dice")
    if dice is None or not math.isfinite(dice) or not 0.0 <= dice <= 1.0:
        _fail(bundle, "evaluate", f"{metrics_file} has no valid val_mean_dice row: {metrics}")
    raw = Path(output_dir) / "val_mean_dice_raw.csv"
    if not raw.is_file():
        _fail(bundle, "evaluate", f"evaluation wrote no per-case file {raw}")
    return metrics


def run_inference(
    bundle_dir: Path, settings: dict, input_dir: Path, ckpt_path: Path | None, output_dir: Path, extra_overrides: dict | None = None
):
    """ConfigWorkflow('infer') on inference.json → initialize → check_properties == [] → run → finalize."""
    bundle_dir = Path(bundle_dir)
    overrides = {**_overrides(settings, "infer"), "dataset_dir": str(input_dir), "output_dir": str(output_dir)}
    if ckpt_path is None:
        overrides["load_pretrain"] = False
    else:
        overrides["ckpt_path"] = str(ckpt_path)
    overrides.update(extra_overrides or {})
    workflow = _workflow(bundle_dir, "infer", ["inference.json"], overrides)
    _initialize_checked(bundle_dir.name, "infer", workflow)
    try:
        workflow.run()
    finally:
        workflow.finalize()
    return workflow


def run_weightless_inference(bundle_dir: Path, settings: dict, input_dir: Path, output_dir: Path):
    """The model zoo's inference test without weights: ``handlers#0#_disabled_: true`` with ``load_pretrain`` left
    on and a ``ckpt_path`` that does not exist; the run must need no weights file."""
    missing = Path(output_dir).parent / "no_weights_here" / "model.pt"
    return run_inference(bundle_dir, settings, input_dir, missing, output_dir, {"handlers#0#_disabled_": True})


def _check_png_mask(bundle: str, out: Path, reference: Path, allowed: Sequence[int] | None) -> None:
    """An 8-bit grey PNG mask with the reference image's size and only ``allowed`` values."""
    import numpy as np
    from PIL import Image

    with Image.open(out) as mask, Image.open(reference) as image:
        if mask.mode != "L":
            _fail(bundle, "infer", f"{out.name} is a PNG of mode {mask.mode}, expected 8-bit grey (L)")
        if mask.size != image.size:
            _fail(bundle, "infer", f"{out.name} is {mask.size[0]}x{mask.size[1]}, input {reference.name} is {image.size[0]}x{image.size[1]}")
        values = set(np.unique(np.asarray(mask)).tolist())
    if allowed is not None and not values <= set(allowed):
        _fail(bundle, "infer", f"{out.name} holds values {sorted(values)}, allowed {list(allowed)}")


def check_inference_outputs(bundle_dir: Path, settings: dict, inputs: Iterable[InferenceInput], output_dir: Path) -> list[Path]:
    """One uint8 NIfTI per input, with the reference's spatial shape and affine, label values as allowed (2D image
    bundles: one grey PNG mask per image, of the image's size)."""
    import nibabel as nib
    import numpy as np

    bundle_dir = Path(bundle_dir)
    bundle = bundle_dir.name
    parser = bundle_parser(bundle_dir, "inference.json")
    postfix = parser.get_parsed_content("output_postfix") if "output_postfix" in parser else "seg"
    ext = parser.get_parsed_content("output_ext") if "output_ext" in parser else ".nii.gz"
    outputs = []
    for item in inputs:
        out = Path(output_dir) / f"{item.output_stem}_{postfix}{ext}"
        if not out.is_file():
            present = sorted(p.name for p in Path(output_dir).iterdir()) if Path(output_dir).is_dir() else []
            _fail(bundle, "infer", f"no output {out.name} for input {item.source} (output folder has {present})")
        if ext == ".png":
            _check_png_mask(bundle, out, item.reference, settings.get("label_values"))
            outputs.append(out)
            continue
        image, reference = nib.load(str(out)), nib.load(str(item.reference))
        if image.get_data_dtype() != np.uint8:
            _fail(bundle, "infer", f"{out.name} is {image.get_data_dtype()}, expected uint8")
        if tuple(image.shape) != tuple(reference.shape[:3]):
            _fail(bundle, "infer", f"{out.name} has shape {image.shape}, input {item.reference.name} has {reference.shape[:3]}")
        if not np.allclose(image.affine, reference.affine, atol=1e-4):
            _fail(bundle, "infer", f"{out.name} affine\n{image.affine}\ndiffers from input {item.reference.name}\n{reference.affine}")
        allowed = settings.get("label_values")
        if allowed is not None:
            values = set(np.unique(np.asarray(image.dataobj)).tolist())
            if not values <= set(allowed):
                _fail(bundle, "infer", f"{out.name} holds values {sorted(values)}, allowed {allowed}")
        outputs.append(out)
    skipped = Path(output_dir) / "skipped_inputs.csv"
    if skipped.exists():
        _fail(bundle, "infer", f"good inputs were reported as skipped: {skipped.read_text()}")
    return outputs


# --------------------------------------------------------------------------------------- f. TorchScript
def _script_failure(exc: BaseException) -> tuple[str, list[str], str]:
    """(one-line reason, names of the functions/classes involved, full text) from a scripting exception."""
    chain, seen = [], exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    text = "\n".join(f"{type(e).__name__}: {e}" for e in chain)
    # the innermost error is the compiler's
    inner = chain[-1]
    message_lines = [l for l in str(inner).splitlines() if l.strip()]
    headline = message_lines[0].strip() if message_lines else type(inner).__name__
    location = ""
    match = re.search(r'File "([^"]+)", line (\d+)', str(inner))
    if match:
        file = Path(match.group(1))
        try:
            file = file.relative_to(REPO_ROOT)
        except ValueError:
            pass
        location = f" at {file}:{match.group(2)}"
    names: list[str] = []
    for a, b in re.findall(r"'([\w.]+)' is being compiled since it was called from '([\w.]+)'", str(inner)):
        for name in (a, b):
            for part in (name, name.split(".")[0]):
                if part not in names and part not in ("forward", "__torch__"):
                    names.append(part)
    via = f" (in {' <- '.join(names[:3])})" if names else ""
    return f"{type(inner).__name__}: {headline}{location}{via}", names, text


def _eager_network(bundle_dir: Path, settings: dict, ckpt_path: Path):
    import torch

    parser = bundle_parser(bundle_dir, "train.json", _overrides(settings, "net"))
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(ckpt_path, map_location="cpu", weights_only=True))
    return net.eval(), _net_input_shape(settings, parser)


def export_torchscript(bundle_dir: Path, settings: dict, ckpt_path: Path, work_dir: Path, try_trace: bool = True) -> ScriptResult:
    """``monai.bundle.ckpt_export`` of network_def (train.json + small overrides) and a jit.load / eager comparison.

    A mismatch raises; a network that does not compile returns ``ScriptResult(scriptable=False, reason=...)`` and,
    with ``try_trace``, notes whether ``ckpt_export(use_trace=True)`` works instead.
    """
    import torch
    from monai.bundle import ckpt_export

    bundle_dir = Path(bundle_dir)
    bundle = bundle_dir.name
    configs = _configs(bundle_dir)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    ts_file = work_dir / "model.ts"
    common = dict(
        net_id="network_def",
        ckpt_file=str(ckpt_path),
        meta_file=str(configs / "metadata.json"),
        config_file=str(configs / "train.json"),
        bundle_root=str(bundle_dir),
        **_overrides(settings, "net"),
    )
    eager, spatial = _eager_network(bundle_dir, settings, ckpt_path)
    in_channels = _metadata(bundle_dir)["network_data_format"]["inputs"]["image"]["num_channels"]
    torch.manual_seed(0)
    x = torch.randn(1, in_channels, *spatial)

    def compare(path: Path) -> float:
        loaded = torch.jit.load(str(path), map_location="cpu")
        with torch.no_grad():
            expected, got = eager(x), loaded(x)
        return float((expected - got).abs().max())

    try:
        ckpt_export(filepath=str(ts_file), **common)
    except Exception as e:  # noqa: BLE001 - the compiler's message is the finding
        reason, names, detail = _script_failure(e)
        result = ScriptResult(False, reason=reason, names=names, detail=detail)
        if try_trace:
            traced = work_dir / "model_traced.ts"
            try:
                ckpt_export(filepath=str(traced), use_trace=True, input_shape=list(x.shape), **common)
                diff = compare(traced)
                result.trace_note = f"ckpt_export --use_trace True works at input {tuple(x.shape)} (max diff {diff:.1e})"
            except Exception as te:  # noqa: BLE001
                result.trace_note = f"tracing fails too: {type(te).__name__}: {str(te).splitlines()[0] if str(te) else ''}"
        return result
    if not ts_file.is_file():
        _fail(bundle, "torchscript", f"ckpt_export wrote no {ts_file}")
    diff = compare(ts_file)
    if not diff <= TORCHSCRIPT_ATOL:
        _fail(bundle, "torchscript", f"TorchScript output differs from eager by {diff:.2e} (> {TORCHSCRIPT_ATOL})")
    return ScriptResult(True, max_abs_diff=diff, ts_file=str(ts_file))


_NOT_SCRIPTABLE = re.compile(
    r"not\s+(torch)?script(able|ed)|cannot\s+be\s+(torch)?script|can't\s+be\s+(torch)?script|does\s+not\s+(torch)?script"
    r"|doesn't\s+(torch)?script|fails?\s+to\s+(torch)?script|not\s+supported\s+by\s+torch\.?jit|no\s+torchscript",
    re.IGNORECASE,
)


def torchscript_doc_section(bundle_dir: Path) -> str | None:
    """Text under the first Markdown heading that contains 'TorchScript' in docs/README.md (None if absent)."""
    readme = Path(bundle_dir) / "docs" / "README.md"
    if not readme.is_file():
        return None
    lines = readme.read_text().splitlines()
    for i, line in enumerate(lines):
        heading = re.match(r"^(#{1,6})\s+(.*)$", line)
        if heading and "torchscript" in heading.group(2).lower():
            level = len(heading.group(1))
            body = []
            for next_line in lines[i + 1 :]:
                other = re.match(r"^(#{1,6})\s+", next_line)
                if other and len(other.group(1)) <= level:
                    break
                body.append(next_line)
            return "\n".join(body).strip()
    return None


def _words(name: str) -> str:
    """'SliceAttention' → 'slice attention'; '_expand_to' → 'expand to'."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).replace("_", " ")
    return " ".join(spaced.lower().split())


def check_torchscript_documented(bundle_dir: Path, result: ScriptResult) -> str:
    """A bundle that does not script must say so, and why, under a 'TorchScript' heading of docs/README.md.

    The section must state that the network is not scriptable (e.g. "not scriptable", "cannot be scripted") and
    name at least one function or class the compiler error points at (as written, or as words: SliceAttention or
    "slice attention"). Returns the section.
    """
    bundle_dir = Path(bundle_dir)
    bundle = bundle_dir.name
    section = torchscript_doc_section(bundle_dir)
    if section is None:
        _fail(bundle, "torchscript", f"not scriptable: {result.reason}; docs/README.md has no 'TorchScript' heading explaining it")
    if not section or not _NOT_SCRIPTABLE.search(section):
        _fail(
            bundle,
            "torchscript",
            f"not scriptable: {result.reason}; the 'TorchScript' section of docs/README.md does not say the network is "
            "not scriptable",
        )
    lowered = " ".join(section.lower().replace("`", "").split())
    if result.names and not any(n.lower() in lowered or _words(n) in _words(lowered) for n in result.names):
        _fail(
            bundle,
            "torchscript",
            f"not scriptable: {result.reason}; the 'TorchScript' section of docs/README.md names none of "
            f"{result.names} (the reason the compiler gives)",
        )
    return section


# --------------------------------------------------------------------------------------------- g. dist
def _cli_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def cli_overrides(overrides: dict) -> list[str]:
    """``{"roi_size": [16, 24, 16]}`` → ``["--roi_size", "[16, 24, 16]"]`` for ``python -m monai.bundle run``."""
    args = []
    for key, value in overrides.items():
        args += [f"--{key}", _cli_value(value)]
    return args


def _subprocess_env() -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_dist_training(work_dir: Path, bundle: str | None = None, nproc_per_node: int | None = None, timeout: float = 600) -> Path:
    """torchrun (2 CPU processes, gloo) training of one bundle on generated data; returns the checkpoint.

    Fails unless the launcher exits 0 and the checkpoint's keys carry no ``module.`` prefix.
    """
    import torch

    dist = json.loads(SETTINGS_FILE.read_text()).get("dist", {})
    bundle = bundle or dist.get("bundle", "pam_unet3d_hippocampus")
    nproc = nproc_per_node or dist.get("nproc_per_node", 2)
    configs = dist.get("configs", ["configs/train.json", "configs/multi_gpu_train.json"])
    bundle_dir = bundle_path(bundle)
    settings = load_settings(bundle)
    work_dir = Path(work_dir)
    data = make_training_data(settings, work_dir / "data")
    ckpt_dir, output_dir = work_dir / "ckpt", work_dir / "eval"
    overrides = {
        **_overrides(settings, "train"),
        "bundle_root": str(bundle_dir),
        "dataset_dir": str(data),
        "ckpt_dir": str(ckpt_dir),
        "run_dir": str(ckpt_dir),
        "output_dir": str(output_dir),
    }
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc_per_node={nproc}",
        "-m", "monai.bundle", "run", "training", "--config_file", repr(list(configs)), *cli_overrides(overrides),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=bundle_dir, env=_subprocess_env(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        _fail(bundle, "dist", f"torchrun exited {proc.returncode}: {' '.join(cmd)}\n{tail}")
    ckpt = ckpt_dir / "model.pt"
    if not ckpt.is_file():
        _fail(bundle, "dist", f"torchrun training wrote no checkpoint {ckpt}")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    prefixed = [k for k in state if k.startswith("module.")]
    if prefixed:
        _fail(bundle, "dist", f"checkpoint keys keep the DistributedDataParallel prefix, e.g. {prefixed[0]}")
    return ckpt


# ----------------------------------------------------------------------------------------------- driver
def verify_bundle(
    bundle: str, work_dir: Path | None = None, workflows: bool = True, log: Callable[[str], None] = print
) -> list[CheckResult]:
    """Run checks a-f on one bundle; returns one CheckResult per check (it does not raise on a failed check)."""
    results: list[CheckResult] = []
    state: dict[str, Any] = {}
    own_tmp = work_dir is None
    work_dir = Path(tempfile.mkdtemp(prefix=f"verify_{bundle}_")) if own_tmp else Path(work_dir)

    def step(check: str, fn: Callable[[], str | None]) -> bool:
        start = time.perf_counter()
        try:
            note = fn() or ""
            ok = True
        except BundleCheckError as e:
            ok, note = False, e.problem
        except Exception as e:  # noqa: BLE001 - report any crash as a failure of this check
            ok, note = False, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=-3)}"
        seconds = time.perf_counter() - start
        results.append(CheckResult(bundle, check, ok, note, seconds))
        log(f"[{bundle}] {check:<12} {'OK  ' if ok else 'FAIL'} ({seconds:5.1f} s) {note}".rstrip())
        return ok

    try:
        bundle_dir = bundle_path(bundle)
        step("files", lambda: f"{len(check_required_files(bundle_dir))} required files, JSON parses")
        step("format", lambda: f"{check_config_format(bundle_dir)} configs formatted (pretty-format-json --indent=4)")
        step("metadata", lambda: f"version {check_metadata(bundle_dir)['version']}, schema {SCHEMA_FILE.name}")
        step("logging", lambda: check_logging_conf(bundle_dir))
        if not step("settings", lambda: f"layout {load_settings(bundle)['layout']}"):
            return results
        settings = load_settings(bundle)
        step("net", lambda: ", ".join(f"{k} -> {tuple(v)}" for k, v in check_net_in_out(bundle_dir, settings).items()))
        if not workflows:
            return results
        in_channels = _metadata(bundle_dir)["network_data_format"]["inputs"]["image"]["num_channels"]

        def train() -> str:
            data = make_training_data(settings, work_dir / "data")
            state["data"], state["ckpt"] = data, work_dir / "ckpt" / "model.pt"
            run_training(bundle_dir, settings, data, work_dir / "ckpt", work_dir / "train_out")
            return f"checkpoint {state['ckpt']}"

        def evaluate() -> str:
            metrics = run_evaluation(bundle_dir, settings, state["data"], state["ckpt"], work_dir / "eval")
            return f"val_mean_dice {metrics['val_mean_dice']:.4f}"

        def infer() -> str:
            inputs = make_inference_inputs(settings, work_dir / "infer_in", in_channels)
            run_inference(bundle_dir, settings, work_dir / "infer_in", state["ckpt"], work_dir / "infer_out")
            outputs = check_inference_outputs(bundle_dir, settings, inputs, work_dir / "infer_out")
            return f"{len(outputs)} outputs checked against their inputs (type, shape, geometry, values)"

        def weightless() -> str:
            inputs = make_inference_inputs(settings, work_dir / "weightless_in", in_channels)
            run_weightless_inference(bundle_dir, settings, work_dir / "weightless_in", work_dir / "weightless_out")
            outputs = check_inference_outputs(bundle_dir, settings, inputs, work_dir / "weightless_out")
            return f"{len(outputs)} outputs with handlers#0#_disabled_ and no weights file"

        def torchscript() -> str:
            result = export_torchscript(bundle_dir, settings, state["ckpt"], work_dir / "ts")
            if not result.scriptable:
                check_torchscript_documented(bundle_dir, result)
                return result.summary() + " (documented in docs/README.md)"
            return result.summary()

        if step("train", train):
            step("evaluate", evaluate)
            step("infer", infer)
            step("weightless", weightless)
            step("torchscript", torchscript)

        for variant in settings.get("variants", {}):
            variant_dir = work_dir / f"variant_{variant}"
            variant_state: dict[str, Any] = {}

            def train_variant(variant: str = variant, variant_dir: Path = variant_dir, vs: dict = variant_state) -> str:
                chosen = variant_settings(settings, variant)
                vs["settings"], vs["data"] = chosen, make_training_data(chosen, variant_dir / "data")
                vs["ckpt"] = variant_dir / "ckpt" / "model.pt"
                run_training(bundle_dir, chosen, vs["data"], variant_dir / "ckpt", variant_dir / "train_out")
                return f"layout {chosen['layout']}, checkpoint {vs['ckpt']}"

            def evaluate_variant(variant_dir: Path = variant_dir, vs: dict = variant_state) -> str:
                metrics = run_evaluation(bundle_dir, vs["settings"], vs["data"], vs["ckpt"], variant_dir / "eval")
                return f"val_mean_dice {metrics['val_mean_dice']:.4f}"

            if step(f"train[{variant}]", train_variant):
                step(f"evaluate[{variant}]", evaluate_variant)
    finally:
        if own_tmp:
            shutil.rmtree(work_dir, ignore_errors=True)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", nargs="*", help="bundle folder names (default: every folder in bundles/)")
    parser.add_argument("--dist", action="store_true", help="also run the 2-process torchrun training check (g)")
    parser.add_argument("--static", action="store_true", help="only checks a-d (no training, evaluation, inference, export)")
    parser.add_argument("--work_dir", help="keep outputs here instead of a temporary folder")
    parser.add_argument("--fix_format", action="store_true", help="rewrite unformatted configs/*.json, then exit")
    args = parser.parse_args(argv)
    names = args.bundles or list_bundles()
    unknown = [n for n in names if not (BUNDLES_DIR / n).is_dir()]
    if unknown:
        print(f"unknown bundle(s): {', '.join(unknown)}; available: {', '.join(list_bundles())}", file=sys.stderr)
        return 2
    if args.fix_format:
        for name in names:
            check_config_format(bundle_path(name), fix=True)
            print(f"[{name}] configs formatted")
        return 0
    import monai.bundle  # noqa: F401 - imported once up front so the first check's time is its own

    results: list[CheckResult] = []
    for name in names:
        work = Path(args.work_dir) / name if args.work_dir else None
        results += verify_bundle(name, work_dir=work, workflows=not args.static)
    if args.dist:
        start = time.perf_counter()
        dist_bundle = json.loads(SETTINGS_FILE.read_text()).get("dist", {}).get("bundle", "pam_unet3d_hippocampus")
        with tempfile.TemporaryDirectory(prefix="verify_dist_") as tmp:
            try:
                ckpt = run_dist_training(Path(args.work_dir) / "dist" if args.work_dir else Path(tmp), bundle=dist_bundle)
                result = CheckResult(dist_bundle, "dist", True, f"torchrun exit 0, {ckpt.name} keys without 'module.'")
            except BundleCheckError as e:
                result = CheckResult(e.bundle, "dist", False, e.problem)
            except Exception as e:  # noqa: BLE001
                result = CheckResult(dist_bundle, "dist", False, f"{type(e).__name__}: {e}")
        result.seconds = time.perf_counter() - start
        print(f"[{result.bundle}] {'dist':<12} {'OK  ' if result.ok else 'FAIL'} ({result.seconds:5.1f} s) {result.message}")
        results.append(result)
    failed = [r for r in results if not r.ok]
    print(f"\n{len(results) - len(failed)}/{len(results)} checks passed")
    for r in failed:
        print(f"FAILED [{r.bundle}] {r.check}: {r.message.splitlines()[0] if r.message else ''}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
