"""Validation of every user value that ends up in a remote command, before any SSH call."""

from __future__ import annotations

import posixpath
import re

from tars_operators.errors import InvalidValue

# Hard floor whatever the app's own pattern says: no shell metacharacters, no path tricks.
# Every pattern here is used with ``fullmatch`` only (no anchors: ``$`` alone would let a
# trailing newline through ``re.match``/``re.search``).
SAFE_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z._+-]{0,63}")
SAFE_ADDRESS = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}|\[?[0-9A-Fa-f:.]{2,45}\]?")
SAFE_HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
MODE = re.compile(r"0?[0-7]{3}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def validate_version(version: object, pattern: str | None = None) -> str:
    """Return ``version`` if it is safe and matches the app's pattern, else raise InvalidValue.

    The app's ``artifact.version_pattern`` must match the whole string (``re.fullmatch``):
    a ``$`` in it never lets ``"2.0.0\\n"`` through.
    """
    if not isinstance(version, str):
        raise InvalidValue(f"version must be a string, got {type(version).__name__}")
    shown = repr(version[:80])
    if not SAFE_VERSION.fullmatch(version) or ".." in version:
        raise InvalidValue(
            f"version {shown} is not allowed: use 1-64 characters from [0-9A-Za-z._+-], "
            "starting with a letter or digit, without '..'"
        )
    if pattern is not None and not re.fullmatch(pattern, version):
        raise InvalidValue(f"version {shown} does not match artifact.version_pattern {pattern}")
    return version


def validate_host_name(name: object) -> str:
    """An inventory host name (used in file names and messages)."""
    if not isinstance(name, str) or not SAFE_HOST_NAME.fullmatch(name):
        raise InvalidValue(f"host name {str(name)[:80]!r} is not allowed")
    return name


def validate_address(address: object) -> str:
    """A DNS name, IPv4 or IPv6 address: nothing a shell or ssh option parser could misread."""
    if not isinstance(address, str) or not SAFE_ADDRESS.fullmatch(address) or address.startswith("-"):
        raise InvalidValue(f"host address {str(address)[:80]!r} is not a valid host name or IP address")
    return address


def validate_remote_path(path: object, what: str = "path") -> str:
    """An absolute remote path without '..', control characters or the filesystem root."""
    if not isinstance(path, str) or not path.startswith("/") or _CONTROL.search(path):
        raise InvalidValue(f"{what} {str(path)[:120]!r} must be an absolute path without control characters")
    if ".." in path.split("/"):
        raise InvalidValue(f"{what} {path!r} must not contain '..'")
    normal = posixpath.normpath(path)
    if normal in ("/", "//"):
        raise InvalidValue(f"{what} {path!r} must not be the filesystem root")
    return normal


def validate_relative_path(path: object, what: str = "path") -> str:
    """A path inside the release directory: relative, no '..', no control characters."""
    if not isinstance(path, str) or not path or _CONTROL.search(path):
        raise InvalidValue(f"{what} {str(path)[:120]!r} must be a non-empty relative path")
    if path.startswith("/") or ".." in path.split("/"):
        raise InvalidValue(f"{what} {path!r} must stay inside the release directory (relative, no '..')")
    normal = posixpath.normpath(path)
    if normal in (".", "") or normal.startswith(".tars"):
        raise InvalidValue(f"{what} {path!r} must name a file inside the release (not .tars/)")
    return normal


def validate_mode(mode: str) -> str:
    """A file mode such as 0644 (octal digits only)."""
    if not MODE.fullmatch(mode):
        raise InvalidValue(f"file mode {mode!r} must be three or four octal digits such as 0644")
    return mode.rjust(4, "0")


def validate_sha256(digest: object) -> str:
    """Lower-case hex sha256."""
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise InvalidValue(f"sha256 {str(digest)[:80]!r} is not 64 lower-case hex digits")
    return digest
