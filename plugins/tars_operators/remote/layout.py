"""The on-host release layout (see docs/architecture.md, "On-host layout")."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from tars_operators.remote.validate import validate_remote_path, validate_version

TMP_PREFIX = ".tmp-"  # releases/.tmp-<version>-<rand>: a release being unpacked
META_DIR = ".tars"
META_FILE = ".tars/release.json"
UPLOAD_DIR = ".tars-tmp"  # pushed tarballs and rendered templates on their way in


def rand_token(nbytes: int = 4) -> str:
    """A short random suffix for temporary names on the host."""
    return secrets.token_hex(nbytes)


@dataclass(frozen=True)
class ReleaseLayout:
    """Absolute paths of one app's deploy root on one host."""

    deploy_root: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "deploy_root", validate_remote_path(self.deploy_root, "deploy_root"))

    @property
    def releases(self) -> str:
        return f"{self.deploy_root}/releases"

    @property
    def current(self) -> str:
        return f"{self.deploy_root}/current"

    @property
    def shared(self) -> str:
        return f"{self.deploy_root}/shared"

    @property
    def uploads(self) -> str:
        return f"{self.deploy_root}/{UPLOAD_DIR}"

    def release_dir(self, version: str) -> str:
        return f"{self.releases}/{validate_version(version)}"

    def meta_path(self, version: str) -> str:
        return f"{self.release_dir(version)}/{META_FILE}"

    def tmp_release_dir(self, version: str, token: str) -> str:
        return f"{self.releases}/{TMP_PREFIX}{validate_version(version)}-{token}"

    def tarball(self, sha256: str) -> str:
        """Where a pushed or pulled tarball waits on the host (named by content)."""
        return f"{self.uploads}/{sha256}.tar.gz"

    @staticmethod
    def link_target(version: str) -> str:
        """What ``current`` points at: relative, so the deploy root can move."""
        return f"releases/{validate_version(version)}"
