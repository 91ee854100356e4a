"""``medattn``: chores around the bundle collection (demo, listings, sample data).

    medattn demo                      # segment a folder with pam_unet3d_hippocampus (input made here)
    medattn bundles [--bundles_dir D] # list the bundles
    medattn attention                 # list attention modules of the registry
    medattn sample_data OUT [--layout nifti|msd|brats|synapse|btcv|acdc|isic|images] [--num N] [--seed S]
    medattn plot RUN_DIR [--output PNG]             # training curves of a run folder
    medattn promote RUN_DIR [--checkpoint model.pt] [--force]   # a run's model -> the bundle's models/
    medattn zoo list | install NAME|URL|ZIP | verify DIR | package DIR | export DIR OUT --base_urls U | push DIR REPO

``medattn <command> --help`` describes a command's flags.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

import fire

__all__ = ["main", "demo", "bundles", "attention", "sample_data", "plot", "promote", "find_bundles_dir"]

logger = logging.getLogger("medattn")

REPO_ROOT = Path(__file__).resolve().parents[1]


def find_bundles_dir(bundles_dir: str | None = None) -> Path:
    """The bundles/ folder: the argument, $MEDATTN_BUNDLES, or the checkout this package was installed from."""
    candidate = Path(bundles_dir or os.environ.get("MEDATTN_BUNDLES") or REPO_ROOT / "bundles")
    if not candidate.is_dir():
        raise FileNotFoundError(
            f"bundles folder not found at '{candidate}': install the package editable from a checkout "
            "(pip install -e .) or pass --bundles_dir / set MEDATTN_BUNDLES"
        )
    return candidate


def bundles(bundles_dir: str | None = None) -> list[str]:
    """List the names of the bundles in the collection (folders with configs/metadata.json).

    Args:
        bundles_dir: the bundles/ folder to list; default $MEDATTN_BUNDLES, else the bundles/ of the checkout
            this package was installed from (editable install).
    """
    root = find_bundles_dir(bundles_dir)
    return sorted(p.name for p in root.iterdir() if (p / "configs" / "metadata.json").is_file())


def attention() -> list[str]:
    """List the attention modules of the registry: the names accepted by ``create_attention``.

    This command takes no flags.
    """
    from medattn_networks.attention import list_attention

    return list_attention()


def sample_data(output_dir: str, layout: str = "nifti", num: int = 4, seed: int = 0) -> str:
    """Write small synthetic data in one of the published layouts the readers support; prints the folder.

    Layouts: nifti (flat folder image_N.nii.gz, an inference input), msd (imagesTr/ + labelsTr/), brats
    (HGG|LGG/<case>/<case>_{t1,t2,t1ce,flair,seg}.nii.gz), synapse (TransUNet train_npz/ + test_vol_h5/ +
    lists/lists_Synapse/), btcv (raw BTCV img/ + label/ NIfTI), acdc (SSL4MIS h5: data/, train_slices.list,
    val.list), isic (ISIC 2018 Task 1 folders: JPEG images, PNG masks), images (flat folder of RGB JPEG / PNG, an
    inference input of the 2D image bundles). For synapse, btcv and acdc the first half of the cases are training
    cases, the rest test (synapse, btcv; named after TransUNet's split) or validation (acdc) cases; isic writes
    num training cases and ceil(num / 4) each for validation and test.

    Args:
        output_dir: folder to write to (made if missing; files of the same names are overwritten).
        layout: nifti, msd, brats, synapse, btcv, acdc, isic or images.
        num: how many images (nifti, images), cases (msd, brats and isic at least 1, btcv 1 to 30, synapse 2 to
            30) or volumes for acdc (at least 2).
        seed: random seed; the same seed writes the same files.
    """
    from medattn_networks.data import make_sample_data

    return str(make_sample_data(output_dir, layout, num, seed=seed))


DEMO_INPUT = "demo/input"


def _demo_inputs(input_dir: Path, num: int, data_dir: Path) -> list[Path]:
    """Copy ``num`` validation scans of the hippocampus set into ``input_dir`` (or synthesise if it is absent)."""
    from medattn_networks.data import make_nifti_folder, msd_datalist

    input_dir.mkdir(parents=True, exist_ok=True)
    if (data_dir / "imagesTr").is_dir():
        items = msd_datalist(data_dir, "validation", 40)[:num]
        for item in items:
            shutil.copy(item["image"], input_dir / Path(item["image"]).name)
        return [input_dir / Path(i["image"]).name for i in items]
    logger.warning("%s not found: segmenting synthetic volumes instead of real MRI", data_dir)
    make_nifti_folder(input_dir, num)
    return sorted(input_dir.iterdir())


def _snapshot(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.nii*")} if folder.is_dir() else {}


def demo(
    output_dir: str = "demo/output",
    input_dir: str = DEMO_INPUT,
    num: int = 5,
    bundle: str = "pam_unet3d_hippocampus",
    data_dir: str | None = None,
    bundles_dir: str | None = None,
    make_input: bool = False,
) -> str:
    """Segment a folder of scans with a bundle and print the Dice of each label map whose reference label is known.

    Without --input_dir, the demo folder demo/input is filled (once) with num hippocampus MRI scans of the validation
    split of ../shared/data/msd_hippocampus, cases the shipped weights were not trained on (synthetic volumes when
    that folder is absent). A folder given with --input_dir must exist, unless --make_input asks to fill it the
    same way.

    Args:
        output_dir: where the label maps go.
        input_dir: folder of scans to segment (NIfTI, NRRD, MHA or DICOM series sub-folders).
        num: number of demo scans to copy when the demo folder is made.
        bundle: bundle to run.
        data_dir: the hippocampus data set (default ../shared/data/msd_hippocampus beside the checkout); its
            labelsTr gives the reference labels for the Dice.
        bundles_dir: folder of the bundles (default: this checkout's bundles/).
        make_input: fill a missing --input_dir with demo scans instead of stopping.
    """
    from monai.bundle import run

    from medattn_networks.engine.runtime import finish_inference
    from medattn_networks.errors import MissingPathError

    bundle_root = find_bundles_dir(bundles_dir) / bundle
    if not bundle_root.is_dir():
        raise MissingPathError(f"bundle '{bundle}' not found in {bundle_root.parent}; known: {', '.join(bundles(bundles_dir))}")
    source = Path(data_dir) if data_dir else REPO_ROOT.parent / "shared" / "data" / "msd_hippocampus"
    input_path, output_path = Path(input_dir), Path(output_dir)
    if not input_path.is_dir():
        if input_dir != DEMO_INPUT and not make_input:
            raise MissingPathError(
                f"input folder not found: '{input_path}' is not a directory (pass --make_input to fill it with demo scans)"
            )
        inputs = _demo_inputs(input_path, num, source)
        print(f"demo input: {len(inputs)} scan(s) written to {input_dir}")
    before = _snapshot(output_path)
    configs = bundle_root / "configs"
    run(
        run_id="run",
        config_file=str(configs / "inference.json"),
        meta_file=str(configs / "metadata.json"),
        logging_file=str(configs / "logging.conf"),
        bundle_root=str(bundle_root),
        dataset_dir=str(input_path.resolve()),
        output_dir=str(output_path.resolve()),
    )
    after = _snapshot(output_path)
    written = sorted(output_path / name for name, mtime in after.items() if before.get(name) != mtime)
    print(f"{len(written)} label map(s) written to {output_dir}")
    skipped = finish_inference(output_path)
    if skipped:
        print(f"{skipped} input(s) skipped: see {output_path / 'skipped_inputs.csv'}")
    if (source / "labelsTr").is_dir():
        _print_dice(written, source / "labelsTr")
    return str(output_dir)


def _print_dice(predictions: list[Path], labels_dir: Path) -> None:
    import nibabel as nib
    import numpy as np

    from medattn_networks.data import nifti_stem

    for pred_path in predictions:
        name = nifti_stem(pred_path).removesuffix("_seg") + ".nii.gz"
        label_path = labels_dir / name
        if not label_path.is_file():
            continue
        pred = np.asarray(nib.load(str(pred_path)).dataobj)
        label = np.rint(np.asarray(nib.load(str(label_path)).dataobj)).astype(np.uint8)
        if pred.shape != label.shape:
            continue
        scores = []
        for c in (1, 2):
            denom = (pred == c).sum() + (label == c).sum()
            scores.append(2.0 * ((pred == c) & (label == c)).sum() / denom if denom else 1.0)
        print(f"  {pred_path.name}: Dice anterior {scores[0]:.3f}, posterior {scores[1]:.3f}")


def plot(run_dir: str, output: str | None = None) -> str:
    """Draw a training run's curves (train loss, validation metrics, learning rate) as a PNG.

    Args:
        run_dir: the run folder of a training (bundles/NAME/runs/TIMESTAMP), holding TensorBoard event files.
        output: PNG file to write (default RUN_DIR/curves.png).
    """
    from medattn_networks.engine.tracking import plot_run

    path = plot_run(run_dir, output)
    print(f"curves written to {path}")
    return path


def promote(run_dir: str, bundle_dir: str | None = None, checkpoint: str = "model.pt", force: bool = False) -> str:
    """Make a training run's model the bundle's model: copy it to models/model.pt and record run, epoch, metric and
    sha256 in models/model.json and metadata.json (trained_weights).

    Args:
        run_dir: the run folder of a training (bundles/NAME/runs/TIMESTAMP).
        bundle_dir: the bundle folder (default: the bundle whose runs/ folder holds RUN_DIR).
        checkpoint: file of the run to promote, model.pt (best validation) or model_final.pt (last epoch).
        force: replace a models/model.pt that was not promoted from a run, such as shipped weights.
    """
    from medattn_networks.engine.checkpoints import promote as promote_run
    from medattn_networks.errors import MissingPathError

    run_path = Path(run_dir).resolve()
    bundle_path = Path(bundle_dir) if bundle_dir else run_path.parent.parent
    if not (bundle_path / "configs" / "metadata.json").is_file():
        raise MissingPathError(f"'{bundle_path}' is not a bundle folder: pass --bundle_dir")
    record = promote_run(run_path, bundle_path, checkpoint=checkpoint, force=force)
    metric = f", {record['metric']} {record['value']:.4f} at epoch {record['epoch']}" if "metric" in record else ""
    print(f"{run_path / checkpoint} -> {bundle_path / record['file']} (sha256 {record['sha256']}{metric})")
    return str(bundle_path / record["file"])


def _zoo():
    from medattn_networks.zoo.commands import ZooCommands

    return ZooCommands()


COMMANDS = {"demo": demo, "bundles": bundles, "attention": attention, "sample_data": sample_data, "plot": plot, "promote": promote, "zoo": _zoo()}


def main() -> None:
    from medattn_networks.engine.runtime import bundle_error_in
    from medattn_networks.errors import EXIT_CANNOT_START

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        fire.Fire(COMMANDS)
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError, PermissionError) as e:
        cause = bundle_error_in(e) or e
        if isinstance(e, RuntimeError) and cause is e and not isinstance(e, FileNotFoundError):
            raise
        print(f"error: {cause}", file=sys.stderr)
        sys.exit(getattr(cause, "exit_code", EXIT_CANNOT_START))


if __name__ == "__main__":
    main()
