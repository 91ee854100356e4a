"""Install a bundle from the zoo: by name (the index), by URL or from a local zip — verified before and after
extraction, extracted member by member (no zip-slip, absolute paths, links or device files), and renamed into place
in one step. A failed install leaves nothing behind; an existing install is verified, not reused blindly.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from medattn_networks.errors import ZooError
from medattn_networks.zoo.fetch import download
from medattn_networks.zoo.index import find_entry, load_index, select_entry
from medattn_networks.zoo.package import LARGE_FILES, bundle_files, file_digest, read_large_files
from medattn_networks.zoo.versions import unmet_requirements

__all__ = ["default_zoo_dir", "check_members", "safe_extract", "check_weights", "verify_files", "install"]

logger = logging.getLogger("medattn.zoo")
MAX_UNPACKED = 64 * 2**30  # a zip claiming more than this unpacked is refused (zip bomb)
WEIGHT_SUFFIXES = (".pt", ".pth", ".ckpt")


def default_zoo_dir() -> Path:
    """Where bundles are installed: $MEDATTN_ZOO_DIR, else ~/.medattn/zoo."""
    return Path(os.environ.get("MEDATTN_ZOO_DIR") or Path.home() / ".medattn" / "zoo")


def _safe_relpath(name: str, where: str) -> PurePosixPath:
    """``name`` as a relative POSIX path inside its folder, or ZooError."""
    if "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise ZooError(f"{where}: entry '{name}' has an absolute or Windows path")
    path = PurePosixPath(name)
    if any(part in ("..", "") for part in path.parts) or not path.parts:
        raise ZooError(f"{where}: entry '{name}' leaves its folder ('..')")
    return path


def check_members(zf: zipfile.ZipFile, where: str) -> tuple[str, list[zipfile.ZipInfo]]:
    """(top folder, file members) of a bundle zip, refusing anything that is not a plain file or folder under
    one top folder: absolute paths, '..', links, devices, duplicate names, or an unpacked size over 64 GiB."""
    infos = zf.infolist()
    if not infos:
        raise ZooError(f"{where} is an empty zip")
    tops, seen, files, total = set(), set(), [], 0
    for info in infos:
        path = _safe_relpath(info.filename.rstrip("/") if info.is_dir() else info.filename, where)
        mode = info.external_attr >> 16
        kind = stat.S_IFMT(mode)
        if stat.S_ISLNK(mode):
            raise ZooError(f"{where}: entry '{info.filename}' is a symbolic link")
        if kind and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise ZooError(f"{where}: entry '{info.filename}' is a device, pipe or socket, not a file")
        if str(path) in seen:
            raise ZooError(f"{where}: entry '{info.filename}' appears twice")
        seen.add(str(path))
        tops.add(path.parts[0])
        if not info.is_dir():
            if len(path.parts) < 2:
                raise ZooError(f"{where}: file '{info.filename}' is not inside the bundle's folder")
            total += info.file_size
            files.append(info)
    if len(tops) != 1:
        raise ZooError(f"{where}: expected one top folder (the bundle), found {', '.join(sorted(tops))}")
    if total > MAX_UNPACKED:
        raise ZooError(f"{where}: unpacks to {total / 2**30:.1f} GiB, over the {MAX_UNPACKED / 2**30:.0f} GiB limit")
    return tops.pop(), files


def safe_extract(zip_path: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract a checked bundle zip into ``dest``; returns the bundle folder. Files are written one by one with
    their sizes checked (no ``extractall``); nothing outside ``dest`` is touched."""
    zip_path, dest = Path(zip_path), Path(dest)
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ZooError(f"{zip_path} is not a readable zip: {e}") from None
    with zf:
        top, files = check_members(zf, str(zip_path))
        root = dest / top
        root.mkdir(parents=True)
        for info in files:
            out = dest / info.filename
            if os.path.commonpath([out.resolve(), root.resolve()]) != str(root.resolve()):
                raise ZooError(f"{zip_path}: entry '{info.filename}' leaves its folder")
            out.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            try:
                with zf.open(info) as src, open(out, "xb") as dst:
                    while block := src.read(1 << 20):
                        written += len(block)
                        if written > info.file_size:
                            raise ZooError(f"{zip_path}: entry '{info.filename}' is larger than it declares")
                        dst.write(block)
            except (zipfile.BadZipFile, EOFError) as e:
                raise ZooError(f"{zip_path}: entry '{info.filename}' is damaged ({e})") from None
            except FileExistsError:
                raise ZooError(f"{zip_path}: entry '{info.filename}' appears twice") from None
    return root


def check_weights(folder: str | os.PathLike) -> list[Path]:
    """Every weights file (``*.pt``, ``*.pth``, ``*.ckpt``) under ``folder`` loads with ``weights_only=True``: plain
    tensors and containers only, never pickled code. Returns the files; ZooError names the first that does not."""
    import pickle

    import torch

    checked = []
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file() and path.suffix in WEIGHT_SUFFIXES:
            try:
                torch.load(path, map_location="cpu", weights_only=True)
            except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, TypeError) as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ZooError(f"{path.relative_to(folder)} does not load as plain weights (weights_only=True refuses it): {first}") from None
            checked.append(path)
    return checked


def verify_files(folder: str | os.PathLike, entry: dict) -> list[str]:
    """Problems of a bundle folder against an index entry's file list: missing files, other sizes or hashes."""
    folder = Path(folder)
    problems = []
    for rel, expected in entry["files"].items():
        path = folder / rel
        if not path.is_file():
            problems.append(f"{rel} is missing")
            continue
        sha, size = file_digest(path)
        if size != expected["size"]:
            problems.append(f"{rel} is {size} bytes, the index says {expected['size']}")
        elif sha != expected["sha256"]:
            problems.append(f"{rel} has sha256 {sha}, the index says {expected['sha256']}")
    return problems


def _fetch_large_files(root: Path, entry: dict | None, timeout: float) -> None:
    """Download the files of the bundle's large_files.yml (and the index entry's list) into ``root``, verified."""
    wanted = {}
    if (root / LARGE_FILES).is_file():
        for item in read_large_files(root / LARGE_FILES):
            if item.get("hash_type", "sha256") != "sha256" or not item.get("hash_val"):
                raise ZooError(f"{LARGE_FILES}: '{item['path']}' has no sha256 (hash_type sha256, hash_val); it cannot be verified")
            wanted[item["path"]] = {"sha256": item["hash_val"], "size": item.get("size"), "urls": [item["url"]] if item.get("url") else []}
    for item in (entry or {}).get("large_files", []):
        known = wanted.get(item["path"])
        if known is not None and known["sha256"] != item["sha256"]:
            raise ZooError(f"'{item['path']}': the index's sha256 differs from the bundle's {LARGE_FILES}")
        urls = item["urls"] + ([u for u in known["urls"] if u not in item["urls"]] if known else [])
        wanted[item["path"]] = {"sha256": item["sha256"], "size": item["size"], "urls": urls}
    for rel, item in sorted(wanted.items()):
        target = root / _safe_relpath(rel, LARGE_FILES)
        if target.is_file() and file_digest(target)[0] == item["sha256"]:
            continue
        download(item["urls"], target, item["sha256"], item["size"], timeout=timeout)


def _source_kind(source: str) -> str:
    if "://" in source:
        return "url"
    if source.lower().endswith(".zip") or os.sep in source or Path(source).exists():
        return "zip"
    return "name"


def install(
    source: str,
    target_dir: str | os.PathLike | None = None,
    sha256: str | None = None,
    version: str | None = None,
    index: str | os.PathLike | dict | None = None,
    force: bool = False,
    timeout: float = 30.0,
) -> Path:
    """Install a bundle into ``target_dir/<name>`` and return that folder.

    Args:
        source: a bundle name (looked up in ``index``), an http(s)/file URL of a zip, or a local zip.
        target_dir: folder that receives the bundle (default :func:`default_zoo_dir`).
        sha256: expected sha256 of the zip. Needed for a URL that is not in the index; checked for any source.
        version: with a name, this exact version instead of the newest compatible one.
        index: an index file, URL or dict (default: the one shipped with the package).
        force: replace an existing install that differs (it is never replaced otherwise).
        timeout: seconds a download may wait for data before trying the next mirror.
    """
    kind = _source_kind(str(source))
    target_dir = Path(target_dir) if target_dir is not None else default_zoo_dir()
    # a name or URL is looked up in the index (the shipped one by default); a local zip only when an index is given
    wanted = kind in ("name", "url") or index is not None
    loaded = index if isinstance(index, dict) else (load_index(index, timeout=timeout) if wanted else None)
    entry = select_entry(loaded, str(source), version) if kind == "name" else None
    if entry is not None:
        if sha256 is not None and sha256.lower() != entry["zip"]["sha256"]:
            raise ZooError(f"--sha256 {sha256} differs from the index's {entry['zip']['sha256']} for {entry['name']} {entry['version']}")
        sha256 = entry["zip"]["sha256"]
    elif kind == "url" and sha256 is None:
        named = [e for e in (loaded or {}).get("bundles", []) if e["zip"]["file"] == PurePosixPath(str(source).split("?")[0]).name]
        if not named:
            raise ZooError(f"{source} is not in the zoo index: pass --sha256 with the zip's checksum to install it")
        entry, sha256 = named[0], named[0]["zip"]["sha256"]
    created = [p for p in (target_dir, *target_dir.parents) if not p.exists()]  # removed again if the install fails
    target_dir.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix=".medattn-install-", dir=target_dir) as tmp:
            tmp = Path(tmp)
            zip_file = entry["zip"]["file"] if entry is not None else PurePosixPath(str(source).split("?")[0]).name
            zip_path = tmp / (zip_file if zip_file.endswith(".zip") else "bundle.zip")
            if kind == "zip":
                local = Path(source)
                if not local.is_file():
                    raise ZooError(f"zip '{local}' does not exist")
                got, size = file_digest(local)
                if sha256 is not None and got != sha256.lower():
                    raise ZooError(f"{local}: sha256 {got} differs from the expected {sha256.lower()}")
                if sha256 is None:
                    logger.warning(f"{local}: no checksum given; its contents are checked, its origin is not")
                shutil.copyfile(local, zip_path)
            else:
                urls = entry["zip"]["urls"] if kind == "name" else [str(source)]
                if kind == "url" and entry is not None:
                    urls = [str(source)] + [u for u in entry["zip"]["urls"] if u != str(source)]
                size = entry["zip"]["size"] if entry is not None else None
                download(urls, zip_path, sha256, size, timeout=timeout)
            root = safe_extract(zip_path, tmp / "unpacked")
            meta_path = root / "configs" / "metadata.json"
            if not meta_path.is_file():
                raise ZooError(f"{source}: the zip's folder '{root.name}' has no configs/metadata.json")
            meta = json.loads(meta_path.read_text())
            name, found_version = meta.get("name"), meta.get("version")
            if name != root.name:
                raise ZooError(f"{source}: metadata.json names '{name}' but the zip's folder is '{root.name}'")
            if entry is None and loaded is not None:
                entry = find_entry(loaded, name, found_version)
            if entry is not None and (entry["name"], entry["version"]) != (name, found_version):
                raise ZooError(f"{source} holds {name} {found_version}, the index entry is {entry['name']} {entry['version']}")
            requires = entry["requires"] if entry is not None else {"monai": f">={meta.get('monai_version', '0')}"}
            unmet = unmet_requirements(requires)
            if unmet:
                raise ZooError(f"{name} {found_version} needs {', '.join(unmet)}")
            _fetch_large_files(root, entry, timeout)
            if entry is not None:
                problems = verify_files(root, entry)
                if problems:
                    raise ZooError(f"{name} {found_version} after extraction: {'; '.join(problems[:5])}")
            check_weights(root)
            final = target_dir / name
            if final.exists():
                current = _differences(final, root)
                if not current and not force:
                    logger.info(f"{name} {found_version} is already installed at {final} and verified")
                    return final
                if not force:
                    raise ZooError(f"{final} exists and differs from {name} {found_version} ({'; '.join(current[:3])}): pass --force true to replace it")
                os.replace(final, tmp / "previous")
            os.replace(root, final)
            logger.info(f"installed {name} {found_version} at {final}")
            return final
    except BaseException:
        for folder in created:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise


def _differences(installed: Path, fresh: Path) -> list[str]:
    """How an installed folder differs from the freshly unpacked bundle (run outputs such as eval/ ignored)."""
    have, want = set(bundle_files(installed)), set(bundle_files(fresh))
    problems = [f"{rel} is missing" for rel in sorted(want - have)]
    problems += [f"{rel} is not part of the bundle" for rel in sorted(have - want)]
    problems += [f"{rel} differs" for rel in sorted(have & want) if file_digest(installed / rel) != file_digest(fresh / rel)]
    return problems
