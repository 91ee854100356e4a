"""Reproducible zips of a bundle folder.

The same folder gives the same bytes on every machine: entries in sorted order under one top folder named after
the bundle, fixed timestamps (1980-01-01) and permissions, no extra fields, and no compression (stored entries do not
depend on the zlib build; the weights, which are most of a bundle, do not compress anyway). Run outputs and caches
(:data:`EXCLUDED_DIRS`, hidden files, ``*.pyc``, TorchScript exports) stay out. Files over ``large_file_limit``
are listed in ``large_files.yml`` (path, url, sha256, size) instead of being stored, unless ``include_large``.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path, PurePosixPath
from typing import Iterable

from medattn_networks.errors import ZooError

__all__ = [
    "EXCLUDED_DIRS",
    "LARGE_FILE_LIMIT",
    "ZIP_DATE",
    "bundle_files",
    "file_digest",
    "read_metadata",
    "zip_name",
    "read_large_files",
    "format_large_files",
    "package_bundle",
]

EXCLUDED_DIRS = frozenset({"eval", "runs", "sample_data", "__pycache__", ".ipynb_checkpoints"})
EXCLUDED_SUFFIXES = (".pyc", ".pyo", ".ts", ".tmp", ".part")
LARGE_FILE_LIMIT = 25 * 1024 * 1024  # the project's rule for committed weights
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
LARGE_FILES = "large_files.yml"


def file_digest(path: str | os.PathLike, chunk: int = 1 << 20) -> tuple[str, int]:
    """(sha256 hex digest, size in bytes) of a file."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def read_metadata(bundle_dir: str | os.PathLike) -> dict:
    """configs/metadata.json of a bundle folder, with a message naming the file when it is missing or broken."""
    path = Path(bundle_dir) / "configs" / "metadata.json"
    if not path.is_file():
        raise ZooError(f"'{bundle_dir}' is not a bundle folder: {path} is missing")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ZooError(f"{path} is not valid JSON: {e}") from None
    for key in ("name", "version"):
        if not isinstance(meta.get(key), str) or not meta[key]:
            raise ZooError(f"{path} has no '{key}' string")
    return meta


def zip_name(name: str, version: str) -> str:
    """The zip's file name, as the MONAI model zoo names its packages."""
    return f"{name}_v{version}.zip"


def bundle_files(bundle_dir: str | os.PathLike) -> list[str]:
    """The bundle's files that a package holds, as sorted POSIX paths relative to the folder (symlinks refused)."""
    root = Path(bundle_dir)
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in EXCLUDED_DIRS and not d.startswith("."))
        for name in names:
            path = Path(folder) / name
            if name.startswith(".") or name.endswith(EXCLUDED_SUFFIXES):
                continue
            if path.is_symlink():
                raise ZooError(f"{path} is a symbolic link; a package holds regular files only")
            files.append(path.relative_to(root).as_posix())
    return sorted(files)


def read_large_files(path: str | os.PathLike) -> list[dict]:
    """The entries of a ``large_files.yml`` (MONAI's keys: path, url, hash_val, hash_type; plus size)."""
    import yaml

    try:
        content = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as e:
        raise ZooError(f"{path} is not valid YAML: {e}") from None
    entries = content.get("large_files", []) if isinstance(content, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "path" in e for e in entries):
        raise ZooError(f"{path}: expected 'large_files:' with a list of entries that each have a 'path'")
    return entries


def format_large_files(entries: Iterable[dict]) -> str:
    """``large_files.yml`` text for ``entries`` (path, url, hash_val, hash_type, size), in a fixed key order."""
    lines = ["large_files:"]
    for entry in entries:
        lines.append(f'  - path: "{entry["path"]}"')
        lines.append(f'    url: "{entry["url"]}"')
        lines.append(f'    hash_val: "{entry["hash_val"]}"')
        lines.append(f'    hash_type: "{entry.get("hash_type", "sha256")}"')
        lines.append(f'    size: {int(entry["size"])}')
    return "\n".join(lines) + "\n"


def _zip_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    info.compress_type = zipfile.ZIP_STORED
    info.create_system = 3  # unix, so external_attr carries the permission bits
    info.external_attr = (0o100644 << 16) if not name.endswith("/") else ((0o040755 << 16) | 0x10)
    return info


def package_bundle(
    bundle_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    include_large: bool = False,
    large_file_base_url: str | None = None,
    large_file_limit: int = LARGE_FILE_LIMIT,
) -> tuple[Path, list[dict]]:
    """Write ``<name>_v<version>.zip`` of a bundle folder into ``output_dir``; returns (zip, large-file entries).

    Args:
        bundle_dir: the bundle folder (configs/metadata.json names it and gives its version).
        output_dir: where the zip goes (made if missing); an existing zip of that name is replaced atomically.
        include_large: store every file in the zip, whatever its size.
        large_file_base_url: files over ``large_file_limit`` are listed in ``large_files.yml`` with the URL
            ``<base>/<path>`` (they must then be uploaded there; ``export`` / ``push`` do it).
        large_file_limit: size in bytes above which a file is large.

    Raises:
        ZooError: not a bundle folder, a symlink in it, or a large file and neither ``include_large`` nor a URL.
    """
    root = Path(bundle_dir)
    meta = read_metadata(root)
    name, version = meta["name"], meta["version"]
    if name != root.name:
        raise ZooError(f"{root}/configs/metadata.json names the bundle '{name}' but its folder is '{root.name}'")
    files = bundle_files(root)
    large = []
    declared = {}
    if LARGE_FILES in files:
        declared = {e["path"]: e for e in read_large_files(root / LARGE_FILES)}
    for rel in files:
        if rel == LARGE_FILES:
            continue
        sha, size = file_digest(root / rel)
        if rel in declared:
            stated = declared[rel]
            if stated.get("hash_type", "sha256") == "sha256" and stated.get("hash_val") not in (None, "", sha):
                raise ZooError(f"{root / rel}: sha256 {sha} differs from {root / LARGE_FILES}'s {stated['hash_val']}")
        if rel in declared or (size > large_file_limit and not include_large):
            url = declared.get(rel, {}).get("url")
            if not url:
                if not large_file_base_url:
                    raise ZooError(
                        f"{root / rel} is {size / 2**20:.1f} MiB, over the {large_file_limit / 2**20:.0f} MiB limit: pass "
                        "--include_large true to store it in the zip, or --large_file_base_url URL where it will be hosted"
                    )
                url = f"{large_file_base_url.rstrip('/')}/{rel}"
            large.append({"path": rel, "url": url, "hash_val": sha, "hash_type": "sha256", "size": size})
    # declared entries whose file is absent locally stay as declared (they are fetched on install)
    for rel, entry in declared.items():
        if rel not in {e["path"] for e in large}:
            if not entry.get("url") or not entry.get("hash_val") or "size" not in entry:
                raise ZooError(f"{root / LARGE_FILES}: '{rel}' is absent here and its entry lacks url, hash_val or size")
            large.append({"path": rel, "url": entry["url"], "hash_val": entry["hash_val"], "hash_type": entry.get("hash_type", "sha256"), "size": entry["size"]})
    large.sort(key=lambda e: e["path"])
    large_paths = {e["path"] for e in large}
    stored = [rel for rel in files if rel not in large_paths and rel != LARGE_FILES]
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / zip_name(name, version)
    tmp = out_dir / f".{target.name}.tmp-{os.getpid()}"
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            data = {f"{name}/{rel}": root / rel for rel in stored}
            listing = format_large_files(large).encode() if large else None
            if listing is not None:
                data[f"{name}/{LARGE_FILES}"] = None
            folders = {f"{name}/"}
            for member in data:
                parts = member.split("/")[:-1]
                folders.update("/".join(parts[: depth + 1]) + "/" for depth in range(len(parts)))
            for member in sorted(folders | set(data)):
                if member in folders:
                    zf.writestr(_zip_info(member), b"")
                else:
                    source = data[member]
                    zf.writestr(_zip_info(member), listing if source is None else source.read_bytes())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target, large

