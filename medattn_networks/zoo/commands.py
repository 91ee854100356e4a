"""``medattn zoo ...``: the zoo on the command line (fire exposes the methods of :class:`ZooCommands`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from medattn_networks.errors import ZooError

__all__ = ["ZooCommands"]


def _as_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v for v in value.split(",") if v]
    return [str(v) for v in value]


class ZooCommands:
    """Package, index, install, verify and share bundles with their weights (checksummed, atomic, offline-first)."""

    def list(self, index: str | None = None, all_versions: bool = False) -> list[str]:
        """The bundles of the index (default: the one shipped with the package, no network needed).

        Args:
            index: an index file or URL.
            all_versions: every version, not only the newest one that fits the installed MONAI / torch.
        """
        from medattn_networks.zoo.index import load_index, select_entry
        from medattn_networks.zoo.versions import unmet_requirements, version_key

        loaded = load_index(index)
        rows = []
        for name in sorted({e["name"] for e in loaded["bundles"]}):
            if all_versions:
                versions = sorted((e for e in loaded["bundles"] if e["name"] == name), key=lambda e: version_key(e["version"]), reverse=True)
            else:
                try:
                    versions = [select_entry(loaded, name)]
                except ZooError as e:
                    rows.append(f"{name}  (no version fits: {e})")
                    continue
            for entry in versions:
                unmet = unmet_requirements(entry["requires"])
                weights = "weights" if any(p.startswith("models/") for p in entry["files"]) else "no weights"
                note = f"  needs {', '.join(unmet)}" if unmet else ""
                rows.append(f"{entry['name']}  {entry['version']}  {entry['zip']['size'] / 2**20:.1f} MiB  {weights}  {entry['task']}{note}")
        return rows

    def package(self, bundle_dir: str, output_dir: str = ".", include_large: bool = False, large_file_base_url: str | None = None) -> str:
        """Write a reproducible ``<name>_v<version>.zip`` of a bundle folder (byte-identical every time).

        Args:
            bundle_dir: the bundle folder.
            output_dir: where the zip goes.
            include_large: store files over 25 MiB in the zip instead of listing them in large_files.yml.
            large_file_base_url: where the large files will be hosted (their URL is <base>/<path>).
        """
        from medattn_networks.zoo.package import package_bundle

        zip_path, large = package_bundle(bundle_dir, output_dir, include_large=include_large, large_file_base_url=large_file_base_url)
        for item in large:
            print(f"large file (upload it to {item['url']}): {item['path']} sha256 {item['hash_val']} size {item['size']}")
        return str(zip_path)

    def index(self, bundles_dir: str | None = None, output: str | None = None, mirrors: Sequence[str] | str | None = None) -> str:
        """Build the index of a bundles/ folder (every bundle packaged on the fly) and write it to ``output``.

        Args:
            bundles_dir: the bundles/ folder (default: this checkout's).
            output: the JSON file to write (default: print it).
            mirrors: comma-separated URL templates ({name}, {version}, {file}) or base URLs of the zips.
        """
        from medattn_networks.cli import find_bundles_dir
        from medattn_networks.zoo.index import DEFAULT_MIRRORS, build_index

        index = build_index(find_bundles_dir(bundles_dir), _as_list(mirrors) or DEFAULT_MIRRORS)
        text = json.dumps(index, indent=2) + "\n"
        if output is None:
            return text
        Path(output).write_text(text)
        return output

    def install(self, source: str, sha256: str | None = None, target: str | None = None, version: str | None = None,
                index: str | None = None, force: bool = False, timeout: float = 30.0) -> str:
        """Install a bundle by name (newest version that fits the installed MONAI / torch), URL or local zip.

        Args:
            source: a bundle name, an http(s)/file URL of a zip, or a zip file.
            sha256: the zip's sha256 (required for a URL the index does not list).
            target: the folder that receives <name>/ (default $MEDATTN_ZOO_DIR or ~/.medattn/zoo).
            version: an exact version instead of the newest.
            index: an index file or URL (default: the one shipped with the package).
            force: replace an existing install that differs.
            timeout: seconds without data before a mirror is given up.
        """
        from medattn_networks.zoo.install import install

        return str(install(str(source), target, sha256=sha256, version=version, index=index, force=force, timeout=timeout))

    download = install

    def verify(self, bundle_dir: str, index: str | None = None, network: bool = True) -> str:
        """Verify a bundle folder against its index entry: file hashes, metadata schema, weights, network in/out.

        Args:
            bundle_dir: the bundle folder.
            index: an index file or URL (default: the one shipped with the package).
            network: also build the network and run one forward pass.
        """
        from medattn_networks.zoo.verify import verify_folder

        problems = verify_folder(bundle_dir, index, network=network)
        if problems:
            raise ZooError(f"{bundle_dir} failed verification: " + "; ".join(problems))
        return f"{bundle_dir}: verified"

    def export(self, bundle_dir: str, output_dir: str, base_urls: Sequence[str] | str, include_large: bool = False) -> str:
        """Write the zip, large files and index entry of a bundle for a static host serving ``output_dir``.

        Args:
            bundle_dir: the bundle folder.
            output_dir: the folder the host serves.
            base_urls: comma-separated URLs at which output_dir is served (mirrors, tried in order).
            include_large: store the weights inside the zip.
        """
        from medattn_networks.zoo.share import export

        entry = export(bundle_dir, output_dir, _as_list(base_urls), include_large=include_large)
        return f"{entry['zip']['urls'][0]} sha256 {entry['zip']['sha256']}"

    def push(self, bundle_dir: str, repo_id: str, token: str | None = None, revision: str = "main", include_large: bool = False,
             private: bool = False) -> str:
        """Upload a bundle to a Hugging Face Hub repository (needs the optional huggingface_hub package).

        Args:
            bundle_dir: the bundle folder.
            repo_id: user/name of the Hub repository (created if missing).
            token: a Hub token (default: the stored login or $HF_TOKEN).
            revision: the branch.
            include_large: store the weights inside the zip.
            private: create the repository private.
        """
        from medattn_networks.zoo.share import push

        entry = push(bundle_dir, repo_id, token=token, revision=revision, include_large=include_large, private=private)
        return f"{entry['zip']['urls'][0]} sha256 {entry['zip']['sha256']}"
