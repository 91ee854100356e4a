"""Errors that stop a bundle run because of its inputs, outputs, weights or configuration.

Each carries the process exit code a command-line run ends with (see :mod:`medattn_networks.engine.runtime`):

====  ==========================================================================================
code  meaning
====  ==========================================================================================
0     finished; every input was segmented
1     an unexpected failure (a bug, or a problem the project does not recognise): full traceback
2     the run could not start: a missing folder or file, unwritable output, weights missing or not
      fitting the network, an unknown or malformed override
3     no usable input: the input folder holds nothing that can be segmented
4     finished, but some inputs were skipped (listed in ``skipped_inputs.csv`` in the output folder)
====  ==========================================================================================

The classes also derive from the built-in exception a caller would expect (FileNotFoundError, ValueError,
PermissionError), so code that catches those keeps working.
"""

from __future__ import annotations

__all__ = [
    "EXIT_OK",
    "EXIT_FAILURE",
    "EXIT_CANNOT_START",
    "EXIT_NO_USABLE_INPUT",
    "EXIT_INPUTS_SKIPPED",
    "BundleError",
    "MissingPathError",
    "NoUsableInputError",
    "OutputNotWritableError",
    "WeightsError",
    "ConfigError",
    "ZooError",
    "InputsSkipped",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CANNOT_START = 2
EXIT_NO_USABLE_INPUT = 3
EXIT_INPUTS_SKIPPED = 4


class BundleError(Exception):
    """A run cannot start or finish because of something the user can fix; the message names it."""

    exit_code = EXIT_CANNOT_START


class MissingPathError(BundleError, FileNotFoundError):
    """A folder or file the run needs does not exist."""


class NoUsableInputError(BundleError, FileNotFoundError, ValueError):
    """The input folder holds no file that can be segmented (none found, or every one was skipped)."""

    exit_code = EXIT_NO_USABLE_INPUT


class OutputNotWritableError(BundleError, PermissionError):
    """The output folder cannot be created or written."""


class WeightsError(BundleError, FileNotFoundError, RuntimeError):
    """Weights are missing, unreadable, or do not fit the configured network."""


class ConfigError(BundleError, ValueError):
    """An override or config value is unknown or malformed."""


class ZooError(BundleError, ValueError):
    """A zoo package, index entry, download or install is refused: the message says what and where."""


class InputsSkipped(SystemExit):
    """Raised at the end of a run that finished but skipped some inputs: exits with code 4."""

    def __init__(self, message: str) -> None:
        super().__init__(EXIT_INPUTS_SKIPPED)
        self.message = message

    def __str__(self) -> str:
        return self.message
