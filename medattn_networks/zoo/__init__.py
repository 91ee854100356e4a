"""The model zoo: package bundles reproducibly, index them, install them verified and atomically, share them.

``medattn zoo list | package | index | install | download | verify | export | push`` (:class:`ZooCommands`)."""

from medattn_networks.zoo.fetch import download
from medattn_networks.zoo.index import (
    DEFAULT_MIRRORS,
    INDEX_FORMAT,
    build_index,
    bundle_entry,
    find_entry,
    index_schema,
    load_index,
    select_entry,
    shipped_index_path,
    validate_index,
)
from medattn_networks.zoo.install import check_members, check_weights, default_zoo_dir, install, safe_extract, verify_files
from medattn_networks.zoo.package import LARGE_FILE_LIMIT, bundle_files, file_digest, package_bundle, zip_name
from medattn_networks.zoo.share import export, merge_entry, push
from medattn_networks.zoo.verify import check_metadata_schema, check_network, metadata_schema, verify_folder
from medattn_networks.zoo.versions import installed_versions, unmet_requirements, version_key
from medattn_networks.zoo.commands import ZooCommands

__all__ = [
    "DEFAULT_MIRRORS", "INDEX_FORMAT", "LARGE_FILE_LIMIT", "ZooCommands", "build_index", "bundle_entry", "bundle_files",
    "check_members", "check_metadata_schema", "check_network", "check_weights", "default_zoo_dir", "download", "export",
    "file_digest", "find_entry", "index_schema", "install", "installed_versions", "load_index", "merge_entry",
    "metadata_schema", "package_bundle", "push", "safe_extract", "select_entry", "shipped_index_path",
    "unmet_requirements", "validate_index", "verify_files", "verify_folder", "version_key", "zip_name",
]
