"""The zoo: reproducible packages, the shipped index, installs from a loopback HTTP server that are verified and
atomic, every refusal (each leaves nothing on disk), verify, export and push.

Only loopback servers started here are contacted; nothing reaches the network."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import stat
import sys
import threading
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "ci"))

import verify_bundles as vb  # noqa: E402

from medattn_networks import zoo  # noqa: E402
from medattn_networks.data import make_nifti_folder  # noqa: E402
from medattn_networks.errors import ZooError  # noqa: E402

HIPPOCAMPUS = REPO_ROOT / "bundles" / "pam_unet3d_hippocampus"


# ------------------------------------------------------------------------------------------- servers
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest's output clean
        pass


@contextmanager
def serve(folder: Path, handler: type = _QuietHandler):
    """An HTTP server on 127.0.0.1 serving ``folder``; yields its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _StallingHandler(_QuietHandler):
    def do_GET(self) -> None:  # headers, then silence
        self.send_response(200)
        self.end_headers()
        time.sleep(5)


class _TruncatingHandler(_QuietHandler):
    def do_GET(self) -> None:  # announces the whole file, sends half of it, hangs up
        data = (Path(self.directory) / self.path.lstrip("/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.close_connection = True


# ----------------------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def hippo_zip(tmp_path_factory) -> Path:
    return zoo.package_bundle(HIPPOCAMPUS, tmp_path_factory.mktemp("pkg"))[0]


def _index(*entries: dict) -> dict:
    return zoo.validate_index({"format": zoo.INDEX_FORMAT, "bundles": list(entries)})


def _entry(zip_path: Path, urls: list[str], **changes) -> dict:
    entry = zoo.bundle_entry(zip_path, [], urls)
    entry["zip"]["urls"] = urls
    entry.update(changes)
    return entry


def _nothing_left(target: Path) -> bool:
    return not target.exists() or not any(target.iterdir())


def _bad_zip(path: Path, members: list[tuple[str, int, bytes]]) -> Path:
    """A zip whose entries are (name, unix mode, data)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, mode, data in members:
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


def _bundle_copy(tmp_path: Path, name: str = "pam_unet3d_hippocampus") -> Path:
    dst = tmp_path / "src" / name
    shutil.copytree(HIPPOCAMPUS, dst, ignore=shutil.ignore_patterns("eval", "runs", "sample_data", "__pycache__"))
    return dst


# --------------------------------------------------------------------------------------- packaging
def test_packaging_twice_is_byte_identical_and_leaves_run_outputs_out(tmp_path, hippo_zip):
    copy = _bundle_copy(tmp_path)
    for junk in ("eval/metrics.csv", "runs/20261204/model.pt", "configs/__pycache__/x.pyc", ".DS_Store", "models/model.ts"):
        (copy / junk).parent.mkdir(parents=True, exist_ok=True)
        (copy / junk).write_bytes(b"junk")
    time.sleep(1.1)  # other mtimes than the checkout's
    (copy / "LICENSE").touch()
    again = zoo.package_bundle(copy, tmp_path / "again")[0]
    assert again.name == "pam_unet3d_hippocampus_v" + json.loads((HIPPOCAMPUS / "configs/metadata.json").read_text())["version"] + ".zip"
    assert again.read_bytes() == hippo_zip.read_bytes()
    with zipfile.ZipFile(again) as zf:
        names = [i.filename for i in zf.infolist()]
        assert names == sorted(names) and all(n.startswith("pam_unet3d_hippocampus/") for n in names)
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert "pam_unet3d_hippocampus/models/model.pt" in names and "pam_unet3d_hippocampus/configs/inference.json" in names
        assert not any(part in n for n in names for part in ("eval/", "runs/", "__pycache__", ".DS_Store", "model.ts"))


def test_large_files_are_listed_with_their_checksum_or_refused(tmp_path):
    copy = _bundle_copy(tmp_path)
    limit = 100_000  # the 4 MB hippocampus weights count as large here
    with pytest.raises(ZooError, match="model.pt is 4.0 MiB, over the 0 MiB limit: pass --include_large true"):
        zoo.package_bundle(copy, tmp_path / "out", large_file_limit=limit)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.zip"))
    zip_path, large = zoo.package_bundle(copy, tmp_path / "out", large_file_limit=limit, large_file_base_url="http://host/x")
    sha, size = zoo.file_digest(copy / "models" / "model.pt")
    assert large == [{"path": "models/model.pt", "url": "http://host/x/models/model.pt", "hash_val": sha, "hash_type": "sha256", "size": size}]
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        listing = zf.read("pam_unet3d_hippocampus/large_files.yml").decode()
    assert "pam_unet3d_hippocampus/models/model.pt" not in names
    assert f'hash_val: "{sha}"' in listing and f"size: {size}" in listing
    entry = zoo.bundle_entry(zip_path, large, ["http://host/x"])
    assert entry["files"]["models/model.pt"] == {"sha256": sha, "size": size}
    assert entry["large_files"][0]["urls"] == ["http://host/x/models/model.pt"]


def test_symlink_in_a_bundle_folder_is_refused(tmp_path):
    copy = _bundle_copy(tmp_path)
    (copy / "docs" / "link.md").symlink_to(copy / "docs" / "README.md")
    with pytest.raises(ZooError, match="link.md is a symbolic link"):
        zoo.package_bundle(copy, tmp_path / "out")


# ------------------------------------------------------------------------------------------ index
def test_shipped_index_is_current_and_valid():
    """medattn_networks/zoo/index.json is the index of bundles/ as they are: regenerate it with
    `medattn zoo index --output medattn_networks/zoo/index.json` after changing a bundle (and bump its version)."""
    shipped = zoo.load_index()  # validates against the schema
    built = zoo.build_index(REPO_ROOT / "bundles")
    assert [e["name"] for e in shipped["bundles"]] == vb.list_bundles()
    assert shipped == built, "medattn_networks/zoo/index.json is stale: run `medattn zoo index --output medattn_networks/zoo/index.json`"
    hippo = zoo.find_entry(shipped, "pam_unet3d_hippocampus", built["bundles"][vb.list_bundles().index("pam_unet3d_hippocampus")]["version"])
    assert hippo["zip"]["urls"][0].startswith("https://huggingface.co/medattn/pam_unet3d_hippocampus/resolve/v")
    assert hippo["requires"]["monai"] == ">=1.6.1" and "models/model.pt" in hippo["files"]


@pytest.mark.parametrize(
    "edit, problem",
    [
        (lambda e: e["zip"].update(sha256="abc"), "sha256"),
        (lambda e: e["files"].update({"../evil": {"sha256": "0" * 64, "size": 1}}), "evil"),
        (lambda e: e["zip"].update(urls=["ftp://x/y.zip"]), "urls"),
        (lambda e: e.update(extra=1), "extra"),
    ],
)
def test_index_schema_refuses_malformed_entries(hippo_zip, edit, problem):
    entry = _entry(hippo_zip, ["http://127.0.0.1:1"])
    edit(entry)
    with pytest.raises(ZooError, match=f"does not match the zoo index schema: .*{problem}"):
        _index(entry)


def test_versions_order_semantically_and_requirements_filter(hippo_zip):
    assert zoo.version_key("0.10.0") > zoo.version_key("0.9.0") > zoo.version_key("0.9.0-rc1")
    assert sorted(["0.10.0", "0.2.0", "0.9.1", "1.0.0-rc1"], key=zoo.version_key) == ["0.2.0", "0.9.1", "0.10.0", "1.0.0-rc1"]
    entries = [
        _entry(hippo_zip, ["http://127.0.0.1:1/a.zip"], version="0.9.0"),
        _entry(hippo_zip, ["http://127.0.0.1:1/b.zip"], version="0.10.0"),
        _entry(hippo_zip, ["http://127.0.0.1:1/c.zip"], version="0.11.0", requires={"monai": ">=99.0"}),
    ]
    index = _index(*entries)
    assert zoo.select_entry(index, "pam_unet3d_hippocampus")["version"] == "0.10.0"  # not "0.9.0" (string order)
    assert zoo.select_entry(index, "pam_unet3d_hippocampus", "0.9.0")["version"] == "0.9.0"
    with pytest.raises(ZooError, match=r"0.11.0 needs monai>=99.0 \(installed 1.6.1\)"):
        zoo.select_entry(index, "pam_unet3d_hippocampus", "0.11.0")
    with pytest.raises(ZooError, match="no bundle 'nope' in the zoo index; known: pam_unet3d_hippocampus"):
        zoo.select_entry(index, "nope")
    with pytest.raises(ZooError, match="no version 2.0.0 in the zoo index; available: 0.11.0, 0.10.0, 0.9.0"):
        zoo.select_entry(index, "pam_unet3d_hippocampus", "2.0.0")


# -------------------------------------------------------------------------------- the round trip
def _segment(bundle_dir: Path, inputs: Path, out: Path) -> dict[str, np.ndarray]:
    settings = {"overrides": {}, "infer_overrides": {"num_workers": 0}}  # the full-size network, as shipped
    vb.run_inference(bundle_dir, settings, inputs, bundle_dir / "models" / "model.pt", out)
    return {p.name: np.asarray(nib.load(str(p)).dataobj) for p in sorted(out.glob("*.nii.gz"))}


def test_round_trip_package_serve_download_verify_segment(tmp_path, hippo_zip, monkeypatch, capsys):
    from medattn_networks import cli

    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(hippo_zip, site / hippo_zip.name)
    with serve(site) as base:
        entry = zoo.bundle_entry(site / hippo_zip.name, [], [f"{base}/missing", base])  # the first mirror answers 404
        (site / "index.json").write_text(json.dumps(_index(entry)))
        target = tmp_path / "zoo"
        monkeypatch.setattr(sys, "argv", ["medattn", "zoo", "download", "pam_unet3d_hippocampus", "--index", f"{base}/index.json",
                                          "--target", str(target)])
        cli.main()
        installed = target / "pam_unet3d_hippocampus"
        assert capsys.readouterr().out.strip() == str(installed)
    assert sorted(p.name for p in target.iterdir()) == ["pam_unet3d_hippocampus"]  # no temporary folder left
    assert zoo.verify_folder(installed, _index(entry)) == []
    make_nifti_folder(tmp_path / "scans", 2, shape=(24, 28, 20), seed=4)
    ours = _segment(installed, tmp_path / "scans", tmp_path / "out_installed")
    source = _segment(HIPPOCAMPUS, tmp_path / "scans", tmp_path / "out_source")
    assert list(ours) == list(source) == ["image_0_seg.nii.gz", "image_1_seg.nii.gz"]
    assert all(np.array_equal(ours[k], source[k]) for k in ours) and any(ours[k].any() for k in ours)
    # installing again verifies the folder and keeps it; a changed folder is refused unless --force
    assert zoo.install(str(hippo_zip), target, sha256=entry["zip"]["sha256"]) == installed
    (installed / "docs" / "README.md").write_text("changed\n")
    with pytest.raises(ZooError, match="exists and differs .*docs/README.md differs.*--force true"):
        zoo.install(str(hippo_zip), target)
    assert (installed / "docs" / "README.md").read_text() == "changed\n"
    zoo.install(str(hippo_zip), target, force=True)
    assert zoo.verify_folder(installed, _index(entry)) == [] and sorted(p.name for p in target.iterdir()) == ["pam_unet3d_hippocampus"]


def test_large_files_are_fetched_and_verified_on_install(tmp_path):
    copy = _bundle_copy(tmp_path)
    site = tmp_path / "site"
    with serve(site.parent) as base:
        zip_path, large = zoo.package_bundle(copy, site, large_file_limit=100_000, large_file_base_url=f"{base}/weights")
        (tmp_path / "weights" / "models").mkdir(parents=True)
        shutil.copy(copy / "models" / "model.pt", tmp_path / "weights" / "models" / "model.pt")
        entry = zoo.bundle_entry(zip_path, large, [f"{base}/site"])
        installed = zoo.install("pam_unet3d_hippocampus", tmp_path / "zoo", index=_index(entry))
        assert zoo.file_digest(installed / "models" / "model.pt") == zoo.file_digest(copy / "models" / "model.pt")
        assert zoo.verify_folder(installed, _index(entry), network=False) == []
        # a damaged weights file on the host: refused, nothing installed
        (tmp_path / "weights" / "models" / "model.pt").write_bytes(b"x" * large[0]["size"])
        with pytest.raises(ZooError, match="could not download model.pt: .*sha256 .* differs"):
            zoo.install("pam_unet3d_hippocampus", tmp_path / "zoo2", index=_index(entry))
    assert _nothing_left(tmp_path / "zoo2")


# ------------------------------------------------------------------------------------- refusals
def test_wrong_sha256_is_refused_before_extraction(tmp_path, hippo_zip):
    with serve(hippo_zip.parent) as base:
        with pytest.raises(ZooError, match=r"could not download pam_unet3d_hippocampus_v[0-9.]+.zip: .*sha256 [0-9a-f]{64} differs from the expected 0{64}"):
            zoo.install(f"{base}/{hippo_zip.name}", tmp_path / "zoo", sha256="0" * 64)
    assert _nothing_left(tmp_path / "zoo")
    with pytest.raises(ZooError, match="sha256 .* differs from the expected 1{64}"):
        zoo.install(str(hippo_zip), tmp_path / "zoo", sha256="1" * 64)
    assert _nothing_left(tmp_path / "zoo")


def test_url_outside_the_index_needs_a_checksum(tmp_path, hippo_zip):
    with pytest.raises(ZooError, match="is not in the zoo index: pass --sha256"):
        zoo.install("http://127.0.0.1:9/other.zip", tmp_path / "zoo")
    assert _nothing_left(tmp_path / "zoo")


def test_truncated_download_is_refused(tmp_path, hippo_zip):
    with serve(hippo_zip.parent, _TruncatingHandler) as base:
        entry = _entry(hippo_zip, [f"{base}/{hippo_zip.name}"])
        with pytest.raises(ZooError, match=f"could not download {hippo_zip.name}: {base}/.*(truncated|IncompleteRead)"):
            zoo.install("pam_unet3d_hippocampus", tmp_path / "zoo", index=_index(entry))
    assert _nothing_left(tmp_path / "zoo")


def test_stalling_server_times_out(tmp_path, hippo_zip):
    with serve(hippo_zip.parent, _StallingHandler) as base:
        entry = _entry(hippo_zip, [f"{base}/{hippo_zip.name}"])
        start = time.monotonic()
        with pytest.raises(ZooError, match="timed out"):
            zoo.install("pam_unet3d_hippocampus", tmp_path / "zoo", index=_index(entry), timeout=1)
        assert time.monotonic() - start < 4.5
    assert _nothing_left(tmp_path / "zoo")


@pytest.mark.parametrize(
    "members, problem",
    [
        ([("b/configs/metadata.json", 0o100644, b"{}"), ("b/../evil.txt", 0o100644, b"x")], "leaves its folder"),
        ([("b/configs/metadata.json", 0o100644, b"{}"), ("/tmp/evil.txt", 0o100644, b"x")], "absolute"),
        ([("b/configs/metadata.json", 0o100644, b"{}"), ("b/models/model.pt", 0o120777, b"/etc/passwd")], "symbolic link"),
        ([("b/configs/metadata.json", 0o100644, b"{}"), ("b/dev", 0o020644, b"")], "device, pipe or socket"),
        ([("b/configs/metadata.json", 0o100644, b"{}"), ("c/x", 0o100644, b"")], "one top folder"),
    ],
    ids=["zip-slip", "absolute", "symlink", "device", "two-folders"],
)
def test_unsafe_zip_entries_are_refused(tmp_path, members, problem):
    bad = _bad_zip(tmp_path / "bad.zip", members)
    with pytest.raises(ZooError, match=problem):
        zoo.install(str(bad), tmp_path / "zoo" / "inner")
    assert not (tmp_path / "zoo").exists() and not (tmp_path / "evil.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.zip"]


class _Code:
    def __reduce__(self):
        return (print, ("this ran at load time",))


def test_weights_that_unpickle_code_are_refused(tmp_path):
    copy = _bundle_copy(tmp_path)
    torch.save({"weight": torch.zeros(2), "payload": _Code()}, copy / "models" / "model.pt")
    zip_path = zoo.package_bundle(copy, tmp_path / "pkg")[0]
    with pytest.raises(ZooError, match="models/model.pt does not load as plain weights"):
        zoo.install(str(zip_path), tmp_path / "zoo")
    assert _nothing_left(tmp_path / "zoo")


def test_bundle_that_needs_a_newer_monai_is_refused(tmp_path, hippo_zip):
    copy = _bundle_copy(tmp_path)
    meta_path = copy / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["monai_version"] = "99.0.0"
    meta_path.write_text(json.dumps(meta, indent=4))
    zip_path = zoo.package_bundle(copy, tmp_path / "pkg")[0]
    with pytest.raises(ZooError, match=r"needs monai>=99.0.0 \(installed 1.6.1\)"):
        zoo.install(str(zip_path), tmp_path / "zoo")
    assert _nothing_left(tmp_path / "zoo")
    entry = _entry(hippo_zip, ["http://127.0.0.1:9/x.zip"], requires={"monai": ">=99.0"})
    with pytest.raises(ZooError, match=r"no version of pam_unet3d_hippocampus fits the installed packages: .* needs monai>=99.0"):
        zoo.install("pam_unet3d_hippocampus", tmp_path / "zoo", index=_index(entry))
    assert _nothing_left(tmp_path / "zoo")


# ---------------------------------------------------------------------------------------- verify
def test_verify_names_what_is_wrong(tmp_path, hippo_zip):
    index = _index(_entry(hippo_zip, ["http://127.0.0.1:9/x.zip"]))
    installed = zoo.install(str(hippo_zip), tmp_path / "zoo", index=index)
    assert zoo.verify_folder(installed, index) == []
    (installed / "eval").mkdir()
    (installed / "eval" / "metrics.csv").write_text("run outputs are allowed\n")
    (installed / "notes.txt").write_text("not part of the bundle\n")
    meta_path = installed / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["network_data_format"]["outputs"]["pred"]["num_channels"] = 5
    meta_path.write_text(json.dumps(meta, indent=4))
    problems = zoo.verify_folder(installed, index)
    assert any(p.startswith(("configs/metadata.json has sha256", "configs/metadata.json is ")) for p in problems), problems
    assert any(p.startswith("notes.txt is not part of pam_unet3d_hippocampus") for p in problems), problems
    assert any("network output has 3 channels, metadata outputs.pred says 5" in p for p in problems), problems
    assert not any("metrics.csv" in p for p in problems)
    meta.pop("version")
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ZooError, match="has no 'version' string"):
        zoo.verify_folder(installed, index)


# ---------------------------------------------------------------------------------------- share
def test_export_writes_a_static_site_that_installs_by_name(tmp_path):
    copy = _bundle_copy(tmp_path)
    site = tmp_path / "site"
    with serve(site.parent) as base:
        entry = zoo.export(copy, site, [f"{base}/site"], include_large=False)
        stem = entry["zip"]["file"][: -len(".zip")]
        assert (site / entry["zip"]["file"]).is_file() and (site / f"{stem}.json").is_file()
        assert json.loads((site / f"{stem}.json").read_text()) == entry
        index = zoo.load_index(f"{base}/site/index.json")  # read over HTTP and validated
        assert [e["name"] for e in index["bundles"]] == ["pam_unet3d_hippocampus"]
        installed = zoo.install("pam_unet3d_hippocampus", tmp_path / "zoo", index=f"{base}/site/index.json")
        assert zoo.verify_folder(installed, index, network=False) == []
    again = zoo.export(copy, site, [f"{base}/site"])  # the same version again: one entry, replaced
    assert again == entry and len(json.loads((site / "index.json").read_text())["bundles"]) == 1


def test_push_uploads_zip_entry_and_large_files_to_the_hub(tmp_path, monkeypatch):
    copy = _bundle_copy(tmp_path)
    calls = []

    class FakeHub:
        def create_repo(self, **kwargs):
            calls.append(("create_repo", kwargs["repo_id"], kwargs["exist_ok"]))

        def upload_file(self, **kwargs):
            calls.append(("upload_file", kwargs["path_in_repo"], Path(kwargs["path_or_fileobj"]).stat().st_size))

    entry = zoo.push(copy, "someone/hippo", api=FakeHub(), revision="main")
    version = entry["version"]
    assert calls[0] == ("create_repo", "someone/hippo", True)
    assert [c[1] for c in calls[1:]] == [f"pam_unet3d_hippocampus_v{version}.zip", f"pam_unet3d_hippocampus_v{version}.json"]
    assert entry["zip"]["urls"] == [f"https://huggingface.co/someone/hippo/resolve/main/pam_unet3d_hippocampus_v{version}.zip"]
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ZooError, match="medattn zoo push needs huggingface_hub"):
        zoo.push(copy, "someone/hippo")


def test_list_works_offline_from_the_shipped_index():
    rows = zoo.ZooCommands().list()
    names = [row.split()[0] for row in rows]
    assert names == vb.list_bundles()
    hippo = next(r for r in rows if r.startswith("pam_unet3d_hippocampus "))
    assert " weights " in hippo and "MiB" in hippo
