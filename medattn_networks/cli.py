"""``medattn``: chores around the bundle collection (demo, listings, sample data).

    medattn demo                      # segment a folder with pam_unet3d_hippocampus (input made here)
    medattn bundles                   # list the bundles
    medattn attention                 # list attention modules of the registry
    medattn sample_data OUT --layout brats
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

import fire

__all__ = ["main", "demo", "bundles", "attention", "sample_data", "find_bundles_dir"]

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
    """Names of the bundles in the collection."""
    root = find_bundles_dir(bundles_dir)
    return sorted(p.name for p in root.iterdir() if (p / "configs" / "metadata.json").is_file())


def attention() -> list[str]:
    """Names accepted by ``create_attention``."""
    from medattn_networks.attention import list_attention

    return list_attention()


def sample_data(output_dir: str, layout: str = "nifti", num: int = 4, seed: int = 0) -> str:
    """Write small synthetic data: ``layout`` is nifti (a flat folder), msd (imagesTr/labelsTr) or brats."""
    from medattn_networks.data import make_brats_cases, make_msd_task, make_nifti_folder

    makers = {"nifti": make_nifti_folder, "msd": make_msd_task, "brats": make_brats_cases}
    if layout not in makers:
        raise ValueError(f"layout must be one of {sorted(makers)}, got '{layout}'")
    return str(makers[layout](output_dir, num, seed=seed))


def _demo_inputs(input_dir: Path, num: int, data_dir: Path) -> tuple[list[Path], Path | None]:
    """Copy ``num`` validation scans of the hippocampus set into ``input_dir`` (or synthesise if it is absent)."""
    from medattn_networks.data import make_nifti_folder, msd_datalist

    input_dir.mkdir(parents=True, exist_ok=True)
    if (data_dir / "imagesTr").is_dir():
        items = msd_datalist(data_dir, "validation", 40)[:num]
        for item in items:
            shutil.copy(item["image"], input_dir / Path(item["image"]).name)
        return [Path(i["image"]) for i in items], data_dir / "labelsTr"
    logger.warning("%s not found: segmenting synthetic volumes instead of real MRI", data_dir)
    make_nifti_folder(input_dir, num)
    return sorted(input_dir.iterdir()), None


def demo(
    output_dir: str = "demo/output",
    input_dir: str = "demo/input",
    num: int = 5,
    bundle: str = "pam_unet3d_hippocampus",
    data_dir: str | None = None,
    bundles_dir: str | None = None,
) -> str:
    """Segment a folder of NIfTI scans with a bundle; the input folder is made here if it does not exist.

    The default input is ``num`` hippocampus MRI scans from the validation split of ../shared/data/msd_hippocampus
    (cases the shipped weights were not trained on); without that folder, synthetic volumes. When labels exist,
    the Dice of each written label map is printed.
    """
    from monai.bundle import run

    bundle_root = find_bundles_dir(bundles_dir) / bundle
    if not bundle_root.is_dir():
        raise FileNotFoundError(f"bundle '{bundle}' not found in {bundle_root.parent}; known: {', '.join(bundles(bundles_dir))}")
    source = Path(data_dir) if data_dir else REPO_ROOT.parent / "shared" / "data" / "msd_hippocampus"
    inputs, labels_dir = None, None
    if not Path(input_dir).is_dir():
        inputs, labels_dir = _demo_inputs(Path(input_dir), num, source)
        print(f"demo input: {len(inputs)} scan(s) written to {input_dir}")
    configs = bundle_root / "configs"
    run(
        run_id="run",
        config_file=str(configs / "inference.json"),
        meta_file=str(configs / "metadata.json"),
        logging_file=str(configs / "logging.conf"),
        bundle_root=str(bundle_root),
        dataset_dir=str(Path(input_dir).resolve()),
        output_dir=str(Path(output_dir).resolve()),
    )
    written = sorted(Path(output_dir).glob("*.nii*"))
    print(f"{len(written)} label map(s) written to {output_dir}")
    if labels_dir is not None:
        _print_dice(written, labels_dir)
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
        scores = []
        for c in (1, 2):
            denom = (pred == c).sum() + (label == c).sum()
            scores.append(2.0 * ((pred == c) & (label == c)).sum() / denom if denom else 1.0)
        print(f"  {pred_path.name}: Dice anterior {scores[0]:.3f}, posterior {scores[1]:.3f}")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        fire.Fire({"demo": demo, "bundles": bundles, "attention": attention, "sample_data": sample_data})
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
