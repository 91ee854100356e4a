"""``medattn zoo verify``: a bundle folder against its index entry — file hashes, metadata schema, weights that
load as plain tensors into the network, and the network's input / output against the metadata."""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

from medattn_networks.errors import ZooError
from medattn_networks.zoo.index import find_entry, load_index
from medattn_networks.zoo.install import check_weights, verify_files
from medattn_networks.zoo.package import bundle_files, read_metadata

__all__ = ["metadata_schema", "check_metadata_schema", "check_network", "verify_folder"]


def metadata_schema() -> dict:
    """The MONAI bundle metadata schema (meta_schema_20240725, as the model zoo uses it), shipped with the package."""
    return json.loads(resources.files("medattn_networks.zoo").joinpath("meta_schema.json").read_text())


def check_metadata_schema(meta: dict) -> list[str]:
    """Problems of a metadata dict against :func:`metadata_schema` (at most 10)."""
    import jsonschema

    validator = jsonschema.validators.validator_for(metadata_schema())(metadata_schema())
    errors = sorted(validator.iter_errors(meta), key=lambda e: list(e.absolute_path))
    return [f"metadata.json {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors[:10]]


def check_network(folder: str | os.PathLike, meta: dict, weights: str | None = "models/model.pt") -> list[str]:
    """Build ``network_def`` of configs/inference.json, load ``weights`` (strict) when present, forward zeros of the
    metadata's input shape and compare the output's channels and spatial shape with the metadata."""
    import torch
    from monai.bundle import ConfigParser

    folder = Path(folder)
    fmt = meta.get("network_data_format", {})
    try:
        spec_in, spec_out = fmt["inputs"]["image"], fmt["outputs"]["pred"]
    except KeyError:
        return ["metadata.json has no network_data_format inputs.image / outputs.pred"]
    parser = ConfigParser()
    parser.read_config(str(folder / "configs" / "inference.json"))
    parser.update({"bundle_root": str(folder)})
    try:
        net = parser.get_parsed_content("network_def")
    except Exception as e:  # noqa: BLE001 - any config failure is the finding
        return [f"configs/inference.json network_def cannot be built: {type(e).__name__}: {e}"]
    problems = []
    if weights and (folder / weights).is_file():
        state = torch.load(folder / weights, map_location="cpu", weights_only=True)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as e:
            problems.append(f"{weights} does not fit network_def: {str(e).splitlines()[0]}")
    shape = spec_in.get("spatial_shape", [])
    if not shape or not all(isinstance(s, int) for s in shape):
        return problems  # a variable input size (e.g. "8*n"): no shape to run
    x = torch.zeros(1, int(spec_in["num_channels"]), *shape)
    with torch.no_grad():
        try:
            y = net.eval()(x)
        except Exception as e:  # noqa: BLE001
            return problems + [f"network_def fails on input {tuple(x.shape)}: {type(e).__name__}: {e}"]
    y = y[0] if isinstance(y, (list, tuple)) else y
    if y.shape[1] != spec_out["num_channels"]:
        problems.append(f"network output has {y.shape[1]} channels, metadata outputs.pred says {spec_out['num_channels']}")
    if tuple(y.shape[2:]) != tuple(shape):
        problems.append(f"network output spatial shape {tuple(y.shape[2:])} differs from the input {tuple(shape)}")
    return problems


def verify_folder(folder: str | os.PathLike, index: str | os.PathLike | dict | None = None, network: bool = True) -> list[str]:
    """Everything wrong with an installed (or any) bundle folder; an empty list means verified.

    Args:
        folder: the bundle folder.
        index: the index to find its entry in (default: the one shipped with the package).
        network: also build the network, load its weights and run one forward pass.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ZooError(f"bundle folder '{folder}' does not exist")
    meta = read_metadata(folder)
    loaded = index if isinstance(index, dict) else load_index(index)
    problems = check_metadata_schema(meta)
    entry = find_entry(loaded, meta["name"], meta["version"])
    if entry is None:
        problems.append(f"{meta['name']} {meta['version']} is not in the zoo index; its files cannot be verified")
    else:
        problems += verify_files(folder, entry)
        extra = sorted(set(bundle_files(folder)) - set(entry["files"]) - {"large_files.yml"})
        problems += [f"{rel} is not part of {meta['name']} {meta['version']} (run outputs belong in eval/ or runs/)" for rel in extra]
    try:
        check_weights(folder)
    except ZooError as e:
        problems.append(str(e))
    else:
        if network:
            problems += check_network(folder, meta)
    return problems
