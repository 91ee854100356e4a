"""The zoo index: one entry per bundle version, with what an install needs to trust it.

An entry (validated by ``index_schema.json``, shipped with the package)::

    {"name", "version", "task", "description",
     "zip": {"file", "sha256", "size", "urls": [mirror, ...]},
     "files": {"configs/metadata.json": {"sha256", "size"}, ...},      # every file of the installed folder
     "large_files": [{"path", "sha256", "size", "urls": [...]}],       # fetched separately (large_files.yml)
     "requires": {"monai": ">=1.6.1", "torch": ">=2.1", "medattn-networks": ">=0.1.0"},
     "eval_metrics": {...}}                                           # from metadata.json

The package's own ``index.json`` lists the bundles of this collection, so ``medattn zoo list`` works offline.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from importlib import resources
from pathlib import Path
from typing import Iterable, Sequence

from medattn_networks.errors import ZooError
from medattn_networks.zoo.package import file_digest, package_bundle, read_metadata
from medattn_networks.zoo.versions import unmet_requirements, version_key

__all__ = [
    "INDEX_FORMAT",
    "DEFAULT_MIRRORS",
    "TORCH_MINIMUM",
    "bundle_entry",
    "build_index",
    "index_schema",
    "validate_index",
    "load_index",
    "shipped_index_path",
    "select_entry",
    "find_entry",
    "mirror_urls",
]

INDEX_FORMAT = "medattn-zoo-index/1"
# where `medattn zoo push` publishes (a Hugging Face Hub repository per bundle); {name}, {version}, {file} are filled in
DEFAULT_MIRRORS = ("https://huggingface.co/medattn/{name}/resolve/v{version}/{file}",)
TORCH_MINIMUM = "2.1"  # the package's own torch requirement (pyproject.toml)


def mirror_urls(mirrors: Sequence[str], name: str, version: str, file: str) -> list[str]:
    """The URLs of ``file`` under each mirror: a template with {name} / {version} / {file}, or a base URL."""
    urls = []
    for mirror in mirrors:
        if "{file}" in mirror:
            urls.append(mirror.format(name=name, version=version, file=file))
        else:
            urls.append(f"{mirror.rstrip('/')}/{file}")
    return urls


def _requires(meta: dict) -> dict[str, str]:
    from medattn_networks import __version__

    return {
        "monai": f">={meta.get('monai_version', '1.6.1')}",
        "torch": f">={TORCH_MINIMUM}",
        "medattn-networks": f">={meta.get('required_packages_version', {}).get('medattn-networks', __version__)}",
    }


def bundle_entry(zip_path: str | os.PathLike, large_files: Iterable[dict] = (), mirrors: Sequence[str] = DEFAULT_MIRRORS) -> dict:
    """The index entry of a package made by :func:`~medattn_networks.zoo.package.package_bundle`.

    Args:
        zip_path: the zip.
        large_files: its large-file entries (path, url, hash_val, size), as ``package_bundle`` returned them.
        mirrors: URL templates or base URLs where the zip is served, tried in this order by an install.
    """
    zip_path = Path(zip_path)
    sha, size = file_digest(zip_path)
    files = {}
    with zipfile.ZipFile(zip_path) as zf:
        names = [i.filename for i in zf.infolist() if not i.is_dir()]
        top = names[0].split("/", 1)[0] if names else ""
        with zf.open(f"{top}/configs/metadata.json") as f:
            meta = json.load(f)
        for info in zf.infolist():
            if info.is_dir():
                continue
            digest = hashlib.sha256(zf.read(info)).hexdigest()
            files[info.filename.split("/", 1)[1]] = {"sha256": digest, "size": info.file_size}
    name, version = meta["name"], meta["version"]
    large = []
    for entry in large_files:
        large.append({"path": entry["path"], "sha256": entry["hash_val"], "size": int(entry["size"]), "urls": [entry["url"]]})
        files[entry["path"]] = {"sha256": entry["hash_val"], "size": int(entry["size"])}
    return {
        "name": name,
        "version": version,
        "task": meta.get("task", ""),
        "description": meta.get("description", ""),
        "zip": {"file": zip_path.name, "sha256": sha, "size": size, "urls": mirror_urls(mirrors, name, version, zip_path.name)},
        "files": dict(sorted(files.items())),
        "large_files": large,
        "requires": _requires(meta),
        "eval_metrics": meta.get("eval_metrics", {}),
    }


def build_index(bundles_dir: str | os.PathLike, mirrors: Sequence[str] = DEFAULT_MIRRORS, include_large: bool = False) -> dict:
    """The index of every bundle folder under ``bundles_dir`` (each packaged in a temporary folder).

    Files over the large-file limit are listed with URLs in the zip's folder on the first mirror
    (``<folder of the zip>/<path>``) unless ``include_large``.
    """
    root = Path(bundles_dir)
    entries = []
    with tempfile.TemporaryDirectory(prefix="medattn_zoo_index_") as tmp:
        for folder in sorted(p for p in root.iterdir() if (p / "configs" / "metadata.json").is_file()):
            meta = read_metadata(folder)
            base = None
            if not include_large:
                first = mirror_urls(mirrors[:1], meta["name"], meta["version"], "")[0] if mirrors else ""
                base = first.rstrip("/") or None
            zip_path, large = package_bundle(folder, tmp, include_large=include_large, large_file_base_url=base)
            entries.append(bundle_entry(zip_path, large, mirrors))
    return {"format": INDEX_FORMAT, "bundles": entries}


def index_schema() -> dict:
    """The JSON schema of an index (``index_schema.json`` in this package)."""
    return json.loads(resources.files("medattn_networks.zoo").joinpath("index_schema.json").read_text())


def validate_index(index: dict, source: str = "index") -> dict:
    """``index`` if it matches the schema, else ZooError naming the first problems and ``source``."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(index_schema())
    errors = sorted(validator.iter_errors(index), key=lambda e: list(e.absolute_path))
    if errors:
        where = "; ".join(f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors[:5])
        raise ZooError(f"{source} does not match the zoo index schema: {where}")
    for entry in index["bundles"]:
        version_key(entry["version"])
    return index


def shipped_index_path() -> Path:
    """The index of this collection's bundles that ships with the package."""
    return Path(str(resources.files("medattn_networks.zoo").joinpath("index.json")))


def load_index(source: str | os.PathLike | None = None, timeout: float = 30.0) -> dict:
    """An index from a file, a URL (downloaded, size-limited) or, by default, the one shipped with the package."""
    if source is None:
        source = shipped_index_path()
    text = None
    if isinstance(source, str) and "://" in source and not source.startswith("file://"):
        from medattn_networks.zoo.fetch import read_url

        text = read_url(source, timeout=timeout, limit=16 * 2**20).decode("utf-8", errors="replace")
    else:
        path = Path(str(source).removeprefix("file://"))
        if not path.is_file():
            raise ZooError(f"zoo index '{path}' does not exist")
        text = path.read_text()
    try:
        index = json.loads(text)
    except json.JSONDecodeError as e:
        raise ZooError(f"zoo index '{source}' is not valid JSON: {e}") from None
    return validate_index(index, f"zoo index '{source}'")


def find_entry(index: dict, name: str, version: str) -> dict | None:
    """The entry of ``name`` at exactly ``version``, or None."""
    for entry in index["bundles"]:
        if entry["name"] == name and version_key(entry["version"]) == version_key(version):
            return entry
    return None


def select_entry(index: dict, name: str, version: str | None = None, installed: dict[str, str] | None = None) -> dict:
    """The entry to install for ``name``: ``version`` if given, else the newest (semantic order) whose requirements
    the installed packages meet. ZooError names what is missing: the bundle, the version, or the requirement."""
    candidates = [e for e in index["bundles"] if e["name"] == name]
    if not candidates:
        known = sorted({e["name"] for e in index["bundles"]})
        raise ZooError(f"no bundle '{name}' in the zoo index; known: {', '.join(known) or 'none'}")
    candidates.sort(key=lambda e: version_key(e["version"]), reverse=True)
    if version is not None:
        exact = [e for e in candidates if version_key(e["version"]) == version_key(version)]
        if not exact:
            raise ZooError(f"{name} has no version {version} in the zoo index; available: {', '.join(e['version'] for e in candidates)}")
        candidates = exact
    refused = []
    for entry in candidates:
        unmet = unmet_requirements(entry.get("requires", {}), installed)
        if not unmet:
            return entry
        refused.append(f"{entry['version']} needs {', '.join(unmet)}")
    raise ZooError(f"no version of {name} fits the installed packages: {'; '.join(refused)}")
