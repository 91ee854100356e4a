"""The training life cycle of a bundle: run folders, atomic checkpoints, resume, best model, promotion to models/.

A training run writes only into its run folder (``runs/<timestamp>`` under the bundle, or ``--run_dir``)::

    state_epoch<N>.pt   network, optimizer, lr scheduler and trainer state after epoch N (the last few kept)
    model.pt            the network of the best validation so far; best.json says which epoch and metric
    model_final.pt      the network when training ended
    events.out.tfevents.*, curves.png

Every file is written under a temporary name in the same folder and renamed into place, so a run killed at any
moment leaves the previous checkpoint whole. ``--resume true`` continues the newest run from its last state;
:func:`promote` is the only way a trained model reaches the bundle's ``models/`` folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from ignite.engine import Engine, Events

from medattn_networks.errors import MissingPathError, WeightsError

__all__ = [
    "STATE_PATTERN",
    "atomic_output",
    "atomic_save",
    "atomic_write_text",
    "sha256_file",
    "new_run_folder",
    "run_folder",
    "resume_checkpoint",
    "latest_state",
    "TrainingStateSaver",
    "BestModelSaver",
    "EpochSeeder",
    "WeightsLoader",
    "load_weights",
    "promote",
]

logger = logging.getLogger("medattn.training")

STATE_PATTERN = re.compile(r"^state_epoch(\d+)\.pt$")
BEST_RECORD = "best.json"


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """A temporary path (``.<name>.tmp-<pid>``, hidden, in the folder of ``path``) to write to; renamed to ``path``
    when the block ends, removed if it raises (a kill leaves at most a hidden temporary file).

    Args:
        path: the final file.
        suffix: extension the temporary name must keep, for writers that choose the format by extension
            (``case_seg.nii.gz`` → ``.case_seg.tmp-<pid>.nii.gz``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stem = path.name[: -len(suffix)] if suffix and path.name.endswith(suffix) else path.name
    tmp = path.with_name(f".{stem}.tmp-{os.getpid()}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` through a temporary file in the same folder and a rename."""
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    with atomic_output(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _unwrap(module: Any) -> Any:
    return module.module if isinstance(module, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)) else module


def new_run_folder(runs_dir: str | os.PathLike) -> str:
    """``runs_dir/<YYYYmmdd-HHMMSS>`` (with ``-2``, ``-3``... when that name is taken); not created here.

    Under torchrun every process gets the same name, ``run-<TORCHELASTIC_RUN_ID>``.
    """
    if os.environ.get("TORCHELASTIC_RUN_ID"):
        return str(Path(runs_dir) / f"run-{os.environ['TORCHELASTIC_RUN_ID']}")
    base = Path(runs_dir) / time.strftime("%Y%m%d-%H%M%S")
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return str(candidate)


def latest_state(run_dir: str | os.PathLike) -> Path | None:
    """The ``state_epoch<N>.pt`` with the highest N in ``run_dir``, or None."""
    folder = Path(run_dir)
    if not folder.is_dir():
        return None
    states = [(int(m.group(1)), p) for p in folder.iterdir() if (m := STATE_PATTERN.match(p.name))]
    return max(states)[1] if states else None


def run_folder(runs_dir: str | os.PathLike, resume: Any = False, resume_from: str | None = None) -> str:
    """The run folder of a training: the folder of ``resume_from``; with ``resume`` the newest run under
    ``runs_dir`` that holds a training state; otherwise a new timestamped folder."""
    from medattn_networks.engine.bundle_helpers import flag

    if resume_from:
        return str(Path(resume_from).expanduser().resolve().parent)
    if flag(resume, "resume"):
        root = Path(runs_dir)
        runs = sorted((p for p in root.iterdir() if p.is_dir() and latest_state(p)), key=lambda p: p.name) if root.is_dir() else []
        if not runs:
            raise MissingPathError(
                f"nothing to resume: no run folder under '{root}' holds a training state (state_epoch<N>.pt); "
                "pass --run_dir or --resume_from <checkpoint>"
            )
        return str(runs[-1])
    return new_run_folder(runs_dir)


def resume_checkpoint(run_dir: str | os.PathLike, resume: Any = False, resume_from: str | None = None) -> str | None:
    """The training state to continue from (None for a fresh run), checked to be a readable checkpoint."""
    from medattn_networks.engine.bundle_helpers import flag

    if resume_from:
        path = Path(resume_from).expanduser()
        if not path.is_file():
            raise MissingPathError(f"--resume_from: no checkpoint at '{path}'")
    elif flag(resume, "resume"):
        path = latest_state(run_dir)
        if path is None:
            raise MissingPathError(f"--resume: run folder '{run_dir}' holds no training state (state_epoch<N>.pt)")
    else:
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"cannot resume from '{path}': not a readable checkpoint ({type(e).__name__}: {e})") from None
    missing = [k for k in ("model", "optimizer", "trainer") if not isinstance(state, Mapping) or k not in state]
    if missing:
        raise WeightsError(f"cannot resume from '{path}': it holds no {', '.join(missing)} state (is it a model-only file?)")
    trainer = state["trainer"]
    epoch = trainer.get("epoch") or (trainer.get("iteration", 0) // trainer["epoch_length"] if trainer.get("epoch_length") else "?")
    logger.info("resuming from %s (after epoch %s)", path, epoch)
    return str(path)


class TrainingStateSaver:
    """Save the full training state after every epoch and the final network when training ends.

    Args:
        save_dir: the run folder.
        save_dict: name → object with ``state_dict()`` (network, optimizer, lr scheduler, trainer).
        n_saved: how many epoch states to keep (the oldest is removed only after the new one is complete).
        model_key: entry of ``save_dict`` that is the network (written alone to ``final_filename``).
        final_filename: file of the final network.
        interval: save every ``interval`` epochs (and always at the last).
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        n_saved: int = 2,
        model_key: str = "model",
        final_filename: str = "model_final.pt",
        interval: int = 1,
    ) -> None:
        if n_saved < 1:
            raise ValueError(f"n_saved must be at least 1, got {n_saved}")
        self.save_dir = Path(save_dir)
        self.save_dict = dict(save_dict)
        self.n_saved = n_saved
        self.model_key = model_key
        self.final_filename = final_filename
        self.interval = interval

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save_state)
        engine.add_event_handler(Events.COMPLETED, self.save_final)

    def save_state(self, engine: Engine) -> Path | None:
        epoch = engine.state.epoch
        if epoch % self.interval and epoch != engine.state.max_epochs:
            return None
        state = {name: _unwrap(obj).state_dict() for name, obj in self.save_dict.items()}
        path = atomic_save(state, self.save_dir / f"state_epoch{epoch}.pt")
        states = sorted((int(m.group(1)), p) for p in self.save_dir.iterdir() if (m := STATE_PATTERN.match(p.name)))
        for _, old in states[: -self.n_saved]:
            old.unlink(missing_ok=True)
        logger.info("epoch %d: training state saved to %s", epoch, path)
        return path

    def save_final(self, engine: Engine) -> Path:
        path = atomic_save(_unwrap(self.save_dict[self.model_key]).state_dict(), self.save_dir / self.final_filename)
        logger.info("final model saved to %s", path)
        return path


class BestModelSaver:
    """Keep the network of the best validation in ``save_dir/filename``, with ``best.json`` describing it.

    ``best.json`` (metric, value, epoch, sha256) is read back when a resumed run starts, so a resumed training
    replaces the best model only with a better one.

    Args:
        save_dir: the run folder.
        network: the network to save.
        metric_name: key of the evaluator's ``state.metrics`` to compare.
        mode: "max" or "min".
        filename: file name of the best model.
    """

    def __init__(self, save_dir: str | os.PathLike, network: torch.nn.Module, metric_name: str, mode: str = "max", filename: str = "model.pt") -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got '{mode}'")
        self.save_dir = Path(save_dir)
        self.network = network
        self.metric_name = metric_name
        self.mode = mode
        self.filename = filename
        record = self.save_dir / BEST_RECORD
        self.best = json.loads(record.read_text()) if record.is_file() else None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best["value"] if self.mode == "max" else value < self.best["value"]

    def __call__(self, engine: Engine) -> None:
        value = float(engine.state.metrics[self.metric_name])
        if value != value or not self._better(value):  # NaN never wins
            return
        path = atomic_save(_unwrap(self.network).state_dict(), self.save_dir / self.filename)
        self.best = {
            "metric": self.metric_name,
            "value": value,
            "epoch": int(engine.state.epoch),
            "file": self.filename,
            "sha256": sha256_file(path),
        }
        atomic_write_text(self.save_dir / BEST_RECORD, json.dumps(self.best, indent=4) + "\n")
        logger.info("new best %s %.4f at epoch %d: %s", self.metric_name, value, engine.state.epoch, path)


class EpochSeeder:
    """Reseed every random source at the start of each epoch from ``seed + epoch`` and restart the data iterator.

    Each epoch's randomness (shuffling, augmentation, dropout, worker seeds) is then a function of the seed and the
    epoch number alone, so a run resumed from the state saved after epoch N repeats epochs N+1... exactly as the
    uninterrupted run would (on CPU with deterministic algorithms; bit-identical weights).

    Args:
        seed: base seed.
        dataset: the training dataset; its transform's random state is reseeded too (augmentations running in the
            main process; worker processes are seeded from the reseeded torch generator).
    """

    def __init__(self, seed: int = 0, dataset: Any = None) -> None:
        self.seed = int(seed)
        self.dataset = dataset

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        from monai.utils import set_determinism

        seed = self.seed + int(engine.state.epoch)
        set_determinism(seed=seed)
        transform = getattr(self.dataset, "transform", None)
        if hasattr(transform, "set_random_state"):
            transform.set_random_state(seed=seed)
        if engine.state.dataloader is not None:
            engine.set_data(engine.state.dataloader)


def missing_weights_message(path: str | os.PathLike) -> str:
    return (
        f"no weights at '{path}': train the bundle and promote a run (medattn promote), point at another state dict "
        "(--ckpt_path for inference and evaluation, --pretrained_path for fine-tuning), or pass --load_pretrain false "
        "to run with random weights"
    )


def load_weights(network: torch.nn.Module, path: str | os.PathLike, device: str | torch.device = "cpu", key: str | None = None) -> torch.nn.Module:
    """Load the state dict in ``path`` into ``network`` strictly, or raise a WeightsError naming the file and the
    first mismatching keys (never a state-dict dump).

    Args:
        network: the configured network.
        path: a state dict, or a checkpoint dict holding one under ``key`` (default: "model" if present).
        device: map_location.
        key: entry of a checkpoint dict that holds the network's state.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(missing_weights_message(path))
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        raise WeightsError(f"weights file '{path}' cannot be read safely ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if isinstance(state, Mapping) and (key or "model") in state and isinstance(state[key or "model"], Mapping):
        state = state[key or "model"]
    elif key is not None:
        raise WeightsError(f"weights file '{path}' has no entry '{key}'")
    if not isinstance(state, Mapping):
        raise WeightsError(f"weights file '{path}' holds a {type(state).__name__}, not a state dict")
    target = _unwrap(network)
    own = target.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            k = wrong[0]
            parts.append(f"'{k}' is {list(state[k].shape)} in the file but {list(own[k].shape)} in the network ({len(wrong)} such)")
        if missing:
            parts.append(f"the file lacks '{missing[0]}' ({len(missing)} missing)")
        if unexpected:
            parts.append(f"the network has no '{unexpected[0]}' ({len(unexpected)} unexpected)")
        raise WeightsError(f"weights in '{path}' do not fit the configured network: {'; '.join(parts)}")
    target.load_state_dict(state)
    logger.info("loaded weights from %s", path)
    return network


class WeightsLoader:
    """The bundles' checkpoint loader: checks and loads the weights when it is built (before any input is read or
    segmented), so a missing or mismatching file stops the run with one line. Disable it with
    ``load_pretrain false`` or the model zoo's ``handlers#0#_disabled_: true`` (then no weights are needed).

    Args:
        load_path: state dict file.
        load_dict: ``{"model": network}`` (the MONAI CheckpointLoader convention; one network).
        map_location: device for the loaded tensors.
    """

    def __init__(self, load_path: str | os.PathLike, load_dict: Mapping[str, torch.nn.Module], map_location: Any = "cpu") -> None:
        if len(load_dict) != 1:
            raise ValueError(f"WeightsLoader loads one network, got load_dict keys {list(load_dict)}")
        (self.key, self.network), = load_dict.items()
        self.load_path = str(load_path)
        load_weights(self.network, load_path, map_location)

    def attach(self, engine: Engine) -> None:
        """Nothing to do at run time: the weights were loaded when the loader was built."""


PROMOTED_COMPANIONS = ("fingerprint.json",)


def promote(run_dir: str | os.PathLike, bundle_dir: str | os.PathLike, checkpoint: str = "model.pt", force: bool = False) -> dict:
    """Copy a trained model from a run folder to ``bundle_dir/models/model.pt`` and record where it came from.

    Files of :data:`PROMOTED_COMPANIONS` found in the run folder (the dataset fingerprint) are copied beside it.

    The record (run folder, checkpoint, best epoch and metric from best.json, sha256, size, date) goes to
    ``models/model.json`` and to the ``trained_weights`` entry of ``configs/metadata.json``; the previous model is
    replaced atomically. Without ``force`` an existing models/model.pt is kept unless its sha256 is in the record
    (i.e. it was promoted before), so shipped weights are never replaced by accident.

    Args:
        run_dir: the training's run folder.
        bundle_dir: the bundle folder.
        checkpoint: file of the run folder to promote (model.pt: the best; model_final.pt: the last).
        force: replace a models/model.pt that was not promoted from a run.
    """
    run_dir, bundle_dir = Path(run_dir), Path(bundle_dir)
    source = run_dir / checkpoint
    if not source.is_file():
        raise MissingPathError(f"nothing to promote: '{source}' does not exist")
    meta_file = bundle_dir / "configs" / "metadata.json"
    if not meta_file.is_file():
        raise MissingPathError(f"'{bundle_dir}' is not a bundle folder (no configs/metadata.json)")
    target = bundle_dir / "models" / "model.pt"
    record_file = target.with_name("model.json")
    if target.is_file() and not force:
        known = json.loads(record_file.read_text()).get("sha256") if record_file.is_file() else None
        if known != sha256_file(target):
            raise FileExistsError(
                f"'{target}' holds weights that were not promoted from a run (the shipped model?); pass --force to replace them"
            )
    state = torch.load(source, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping) or "optimizer" in state:
        raise WeightsError(f"'{source}' is not a network state dict (promote model.pt or model_final.pt, not a training state)")
    best_file = run_dir / BEST_RECORD
    best = json.loads(best_file.read_text()) if best_file.is_file() else {}
    with atomic_output(target) as tmp:
        shutil.copyfile(source, tmp)
    # preprocessing planned from the training data (e.g. FINE's dataset fingerprint) travels with the weights
    for companion in PROMOTED_COMPANIONS:
        if (run_dir / companion).is_file():
            with atomic_output(target.with_name(companion)) as tmp:
                shutil.copyfile(run_dir / companion, tmp)
    record = {
        "file": "models/model.pt",
        "sha256": sha256_file(target),
        "size": target.stat().st_size,
        "source_run": run_dir.name,
        "source_file": checkpoint,
        "promoted": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if best and checkpoint == best.get("file"):
        record.update({"metric": best["metric"], "value": best["value"], "epoch": best["epoch"]})
    atomic_write_text(record_file, json.dumps(record, indent=4) + "\n")
    meta = json.loads(meta_file.read_text())
    meta["trained_weights"] = record
    atomic_write_text(meta_file, json.dumps(meta, indent=4) + "\n")
    logger.info("promoted %s to %s (sha256 %s)", source, target, record["sha256"])
    return record
