"""Share a bundle: ``export`` writes the zip, its large files and its index entry for any static host (a web
server, an object store, a shared drive); ``push`` uploads them to a Hugging Face Hub repository (optional extra
``huggingface_hub``, imported only when pushing)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Sequence

from medattn_networks.errors import ZooError
from medattn_networks.zoo.index import INDEX_FORMAT, bundle_entry, mirror_urls, validate_index
from medattn_networks.zoo.package import package_bundle, read_metadata, zip_name
from medattn_networks.zoo.versions import version_key

__all__ = ["export", "merge_entry", "push", "HUB_URL"]

HUB_URL = "https://huggingface.co/{repo_id}/resolve/{revision}/{file}"


def merge_entry(index_path: str | os.PathLike, entry: dict) -> dict:
    """Add ``entry`` to the index file at ``index_path`` (made if missing; the same name + version is replaced),
    written atomically; returns the index."""
    path = Path(index_path)
    index = json.loads(path.read_text()) if path.is_file() else {"format": INDEX_FORMAT, "bundles": []}
    validate_index(index, str(path))
    bundles = [e for e in index["bundles"] if (e["name"], version_key(e["version"])) != (entry["name"], version_key(entry["version"]))]
    bundles.append(entry)
    bundles.sort(key=lambda e: (e["name"], version_key(e["version"])))
    index = validate_index({"format": INDEX_FORMAT, "bundles": bundles}, str(path))
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(index, indent=2) + "\n")
    os.replace(tmp, path)
    return index


def export(bundle_dir: str | os.PathLike, output_dir: str | os.PathLike, base_urls: Sequence[str], include_large: bool = False) -> dict:
    """Write, for a static host serving ``output_dir`` at each of ``base_urls``:
    ``<name>_v<version>.zip``, the large files under ``<name>_v<version>/<path>``, ``<name>_v<version>.json`` (the
    index entry) and ``index.json`` (this entry merged into the folder's index). Returns the entry."""
    if not base_urls:
        raise ZooError("export needs at least one base URL where output_dir will be served (--base_urls)")
    meta = read_metadata(bundle_dir)
    out = Path(output_dir)
    stem = zip_name(meta["name"], meta["version"])[: -len(".zip")]
    large_base = f"{base_urls[0].rstrip('/')}/{stem}"
    zip_path, large = package_bundle(bundle_dir, out, include_large=include_large, large_file_base_url=large_base)
    for item in large:
        source = Path(bundle_dir) / item["path"]
        if not source.is_file():
            raise ZooError(f"{source} is listed in large_files.yml but absent here; export needs the file to publish it")
        target = out / stem / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    entry = bundle_entry(zip_path, large, base_urls)
    for item in entry["large_files"]:
        item["urls"] = [f"{base.rstrip('/')}/{stem}/{item['path']}" for base in base_urls]
    (out / f"{stem}.json").write_text(json.dumps(entry, indent=2) + "\n")
    merge_entry(out / "index.json", entry)
    return entry


def push(bundle_dir: str | os.PathLike, repo_id: str, token: str | None = None, revision: str = "main",
         include_large: bool = False, private: bool = False, api=None) -> dict:
    """Upload a bundle's zip, large files and index entry to the Hugging Face Hub model repository ``repo_id``
    (created if missing); returns the entry, whose URLs point at the uploaded files.

    Args:
        bundle_dir: the bundle folder.
        repo_id: ``user/name`` of the Hub repository.
        token: a Hub token (default: huggingface_hub's stored login or $HF_TOKEN).
        revision: branch to upload to.
        include_large: store the weights inside the zip instead of beside it.
        private: create the repository private.
        api: a ``huggingface_hub.HfApi``-like object (tests); default a new HfApi.
    """
    if api is None:
        try:
            from huggingface_hub import HfApi
        except ImportError:
            raise ZooError("medattn zoo push needs huggingface_hub: pip install 'medattn-networks[hub]'") from None
        api = HfApi(token=token)
    meta = read_metadata(bundle_dir)
    mirror = HUB_URL.replace("{repo_id}", repo_id).replace("{revision}", revision)
    base = mirror.replace("/{file}", "")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="medattn_push_") as tmp:
        zip_path, large = package_bundle(bundle_dir, tmp, include_large=include_large, large_file_base_url=base)
        entry = bundle_entry(zip_path, large, [mirror])
        entry_path = Path(tmp) / f"{zip_path.stem}.json"
        entry_path.write_text(json.dumps(entry, indent=2) + "\n")
        api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
        uploads = [(zip_path, zip_path.name), (entry_path, entry_path.name)]
        uploads += [(Path(bundle_dir) / item["path"], item["path"]) for item in large]
        for local, remote in uploads:
            if not Path(local).is_file():
                raise ZooError(f"{local} is listed in large_files.yml but absent here; push needs the file to upload it")
            api.upload_file(path_or_fileobj=str(local), path_in_repo=remote, repo_id=repo_id, repo_type="model", revision=revision,
                            commit_message=f"{meta['name']} {meta['version']}: {remote}")
    entry["zip"]["urls"] = mirror_urls([mirror], meta["name"], meta["version"], entry["zip"]["file"])
    return entry
