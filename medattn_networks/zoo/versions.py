"""Semantic version ordering and requirement checks for zoo entries ("0.10.0" > "0.9.0", "1.0.0-rc1" < "1.0.0")."""

from __future__ import annotations

from importlib import metadata as importlib_metadata

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from medattn_networks.errors import ZooError

__all__ = ["version_key", "installed_versions", "unmet_requirements"]


def version_key(version: str) -> Version:
    """A sortable form of a bundle version: numeric parts compare as numbers, a pre-release sorts before its release.

    Raises:
        ZooError: the string is not a version.
    """
    try:
        return Version(str(version))
    except InvalidVersion:
        raise ZooError(f"'{version}' is not a version (expected e.g. 0.1.0 or 1.2.0-rc1)") from None


def installed_versions() -> dict[str, str]:
    """The versions of the packages zoo entries state requirements on, as installed here."""
    import monai
    import torch

    versions = {"monai": monai.__version__, "torch": torch.__version__.split("+")[0]}
    try:
        versions["medattn-networks"] = importlib_metadata.version("medattn-networks")
    except importlib_metadata.PackageNotFoundError:  # running from a checkout without installing it
        from medattn_networks import __version__

        versions["medattn-networks"] = __version__
    return versions


def unmet_requirements(requires: dict[str, str], installed: dict[str, str] | None = None) -> list[str]:
    """Requirements (``{"monai": ">=1.6.1", ...}``) the installed packages do not meet, each as
    ``"monai>=1.7.0 (installed 1.6.1)"``; a package that is not installed counts as unmet."""
    installed = installed_versions() if installed is None else installed
    unmet = []
    for package, spec in sorted(requires.items()):
        try:
            specifier = SpecifierSet(spec)
        except InvalidSpecifier:
            raise ZooError(f"requirement '{package}{spec}' is not a version specifier (expected e.g. >=1.6.1)") from None
        have = installed.get(package)
        if have is None:
            unmet.append(f"{package}{spec} (not installed)")
        elif not specifier.contains(Version(have), prereleases=True):
            unmet.append(f"{package}{spec} (installed {have})")
    return unmet
