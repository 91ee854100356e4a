"""How a bundle run from ``python -m monai.bundle run`` starts and ends: clear one-line errors, exit codes, checks
of the command line and of the output folder before any compute.

Every bundle config calls :func:`start_run` first in its ``initialize`` list. When the process is the MONAI bundle
command line it then

* checks every ``--id value`` override against the ids of the merged configs (a typo such as ``--num_epochs`` is an
  error naming the closest real id, instead of silently training with the default), and
* replaces the interpreter's report of an uncaught :class:`~medattn_networks.errors.BundleError` (however deep
  MONAI's "Failed to evaluate ConfigExpression" wrapping buries it) by one line ``error: <message>`` and the
  error's exit code (:mod:`medattn_networks.errors`). ``--debug true`` (or ``MEDATTN_DEBUG=1``) keeps the full
  traceback. Any other exception is reported as before, with its traceback.

Called from Python (``monai.bundle.run(...)``, tests), nothing is installed: exceptions reach the caller.
"""

from __future__ import annotations

import ast
import csv
import difflib
import inspect
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Iterable, Sequence

from medattn_networks.errors import EXIT_CANNOT_START, BundleError, ConfigError, InputsSkipped, OutputNotWritableError

__all__ = ["start_run", "running_from_cli", "bundle_error_in", "check_overrides", "cli_overrides", "require_writable", "finish_inference"]

logger = logging.getLogger("medattn")

SPECIAL_KEYS = ("_disabled_", "_requires_", "_desc_", "_mode_")
ALWAYS_ALLOWED = ("debug",)
_installed = {"hook": False}


def running_from_cli() -> bool:
    """True when this process is ``python -m monai.bundle ...`` (also under torchrun)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(spec, "name", None) in ("monai.bundle.__main__", "monai.bundle")


def _debug_requested(argv: Sequence[str]) -> bool:
    if os.environ.get("MEDATTN_DEBUG", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    options = cli_overrides(argv)[1]
    return str(options.get("debug", "false")).strip().lower() in ("1", "true", "yes", "on")


_PACKAGE_DIR = str(Path(__file__).resolve().parents[1])
_USER_ERRORS = (FileNotFoundError, NotADirectoryError, PermissionError, ValueError)


def _raised_by_package(exc: BaseException) -> bool:
    """True when ``exc`` was raised by a line of this package (its own messages for users)."""
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    return last is not None and str(Path(last.tb_frame.f_code.co_filename).resolve()).startswith(_PACKAGE_DIR)


def bundle_error_in(exc: BaseException | None) -> BaseException | None:
    """The first :class:`BundleError` in ``exc``'s chain of causes and contexts, else the first FileNotFoundError,
    PermissionError or ValueError that this package raised itself (its messages name the file and the problem)."""
    seen, fallback = set(), None
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, BundleError):
            return exc
        if fallback is None and isinstance(exc, _USER_ERRORS) and _raised_by_package(exc):
            fallback = exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return fallback


def _excepthook(exc_type, exc, tb) -> None:
    error = bundle_error_in(exc)
    if error is None:
        sys.__excepthook__(exc_type, exc, tb)
        return
    logger.debug("".join(traceback.format_exception(exc_type, exc, tb)))
    print(f"error: {error}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(getattr(error, "exit_code", EXIT_CANNOT_START))  # sys.exit cannot set the status from an excepthook


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def cli_overrides(argv: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """Split a ``monai.bundle`` command line into positionals and ``{name: value}`` options, as fire reads it
    (``--a b``, ``--a=b``, a bare ``--flag`` is True)."""
    positionals, options = [], {}
    i = 0
    while i < len(argv):
        token = argv[i]
        if token.startswith("--") and len(token) > 2:
            name, eq, value = token[2:].partition("=")
            if eq:
                options[name] = _parse_value(value)
            elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                options[name] = _parse_value(argv[i + 1])
                i += 1
            else:
                options[name] = True
        else:
            positionals.append(token)
        i += 1
    return positionals, options


def _run_parameters() -> set[str]:
    from monai.bundle import ConfigWorkflow
    from monai.bundle.scripts import create_workflow, run

    names = set()
    for fn in (run, create_workflow, ConfigWorkflow.__init__):
        names |= {p.name for p in inspect.signature(fn).parameters.values() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return names - {"self", "override"}


def _config_ids(config: Any, prefix: str = "") -> Iterable[str]:
    if isinstance(config, dict):
        items = config.items()
    elif isinstance(config, list):
        items = ((str(i), v) for i, v in enumerate(config))
    else:
        return
    for key, value in items:
        name = f"{prefix}#{key}" if prefix else str(key)
        yield name
        yield from _config_ids(value, name)


def _as_files(value: Any) -> list[str]:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            value = _parse_value(text)
        else:
            value = [v for v in text.split(",") if v]
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


def check_overrides(options: dict[str, Any]) -> None:
    """Raise a ConfigError for an override whose id is in none of the configs of the command line.

    Args:
        options: the command line's ``--name value`` pairs (run parameters such as ``config_file`` are skipped).
    """
    from monai.bundle import ConfigParser
    from monai.bundle.utils import DEFAULT_EXP_MGMT_SETTINGS

    options = dict(options)
    if options.get("args_file"):
        for key, value in ConfigParser.load_config_file(str(options["args_file"])).items():
            options.setdefault(key, value)
    known = _run_parameters()
    if not options.get("config_file"):
        return
    parser = ConfigParser()
    parser.read_config(_as_files(options["config_file"]))
    if options.get("meta_file"):
        parser.read_meta(_as_files(options["meta_file"]))
    allowed = set(ALWAYS_ALLOWED)
    tracking = options.get("tracking")
    if isinstance(tracking, str) and tracking in DEFAULT_EXP_MGMT_SETTINGS:
        allowed |= set(DEFAULT_EXP_MGMT_SETTINGS[tracking]["configs"])
    elif tracking:
        allowed |= set(ConfigParser.load_config_file(str(tracking)).get("configs", {}))
    ids = None
    for name in options:
        if name in known or name in allowed:
            continue
        key = name.lstrip("+").replace("::", "#")
        if key in parser:
            continue
        parent, _, last = key.rpartition("#")
        if last in SPECIAL_KEYS and (not parent or parent in parser):
            continue
        ids = ids if ids is not None else list(_config_ids(parser.get()))
        close = difflib.get_close_matches(key, ids, n=1, cutoff=0.6)
        hint = f"; did you mean '--{close[0]}'?" if close else "; see the bundle's configs for the ids it has"
        files = ", ".join(_as_files(options["config_file"]))
        raise ConfigError(f"unknown override --{name}: '{key}' is not an id of {files}{hint}")


def start_run(argv: Sequence[str] | None = None) -> bool:
    """First step of every bundle config's ``initialize``: on the command line, check the overrides and install
    the one-line error report (see the module docstring). Returns True when running from the command line."""
    if not running_from_cli() and argv is None:
        return False
    argv = list(sys.argv[1:] if argv is None else argv)
    if not _installed["hook"] and not _debug_requested(argv):
        sys.excepthook = _excepthook
        _installed["hook"] = True
    check_overrides(cli_overrides(argv)[1])
    return True


def require_writable(folder: str | os.PathLike, what: str = "output folder", create: bool = False) -> str:
    """``folder``, proven writable by writing and removing a probe file in it (or, when it does not exist yet and
    ``create`` is false, in its nearest existing parent, so a run that stops later leaves no empty folder)."""
    path = Path(folder).expanduser().absolute()
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
        probe_dir = path
        while not probe_dir.exists():
            probe_dir = probe_dir.parent
        if not probe_dir.is_dir():
            raise NotADirectoryError(f"'{probe_dir}' is a file")
        probe = probe_dir / f".medattn-write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise OutputNotWritableError(f"{what} '{path}' is not writable ({e.strerror or e})") from None
    return str(path)


def finish_inference(output_dir: str | os.PathLike, report: str = "skipped_inputs.csv") -> int:
    """Last step of an inference run: count the skipped inputs listed in the output folder's report.

    On the command line a run with skipped inputs ends with exit code 4 (the label maps of the other inputs are
    written); from Python the count is returned.
    """
    path = Path(output_dir) / report
    skipped = 0
    if path.is_file():
        with open(path, newline="") as f:
            skipped = max(0, sum(1 for _ in csv.reader(f)) - 1)
    if skipped:
        message = f"{skipped} input(s) skipped, listed in {path}"
        logger.warning(message)
        if running_from_cli():
            raise InputsSkipped(message)
    return skipped
