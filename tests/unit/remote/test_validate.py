from __future__ import annotations

import pytest

from tars_operators.config.schema import DEFAULT_VERSION_PATTERN
from tars_operators.errors import InvalidValue
from tars_operators.remote.layout import ReleaseLayout
from tars_operators.remote.validate import (
    validate_address,
    validate_mode,
    validate_relative_path,
    validate_remote_path,
    validate_version,
)

pytestmark = pytest.mark.unit

HOSTILE_VERSIONS = [
    "1.0;touch /tmp/pwned", "$(id)", "../../x", "`id`", "1.0\n2", "", "-rf", ".hidden",
    "a" * 65, "1..2", "1.0 2", "1.0'", '1.0"', "1.0|sh", "1.0&", "1.0>x", "1/0", "1.0\x00",
    "~root", "*", "1.0$IFS", "ä1.0",
]


@pytest.mark.parametrize("version", HOSTILE_VERSIONS)
def test_hostile_versions_are_rejected_even_with_a_permissive_pattern(version: str) -> None:
    with pytest.raises(InvalidValue, match="not allowed"):
        validate_version(version, r".*")


@pytest.mark.parametrize("version", ["1.0.0", "2.0.0-broken", "2.0.0-rc.1", "10.20.30"])
def test_good_versions_pass(version: str) -> None:
    assert validate_version(version, DEFAULT_VERSION_PATTERN) == version


def test_version_must_match_the_apps_pattern() -> None:
    with pytest.raises(InvalidValue, match="version_pattern"):
        validate_version("v1", DEFAULT_VERSION_PATTERN)


@pytest.mark.parametrize("value", [None, 1.0, ["1.0"]])
def test_non_strings_are_rejected(value: object) -> None:
    with pytest.raises(InvalidValue):
        validate_version(value)


@pytest.mark.parametrize("path", ["/", "//", "", "srv/app", "/srv/../etc", "/srv/a\nb", "/srv/\x00"])
def test_bad_remote_paths(path: str) -> None:
    with pytest.raises(InvalidValue):
        validate_remote_path(path)


def test_remote_path_is_normalised() -> None:
    assert validate_remote_path("/srv//app/") == "/srv/app"
    assert ReleaseLayout("/srv/app/").current == "/srv/app/current"


@pytest.mark.parametrize("path", ["/etc/passwd", "../x", "a/../../x", "", ".", ".tars/release.json"])
def test_bad_template_destinations(path: str) -> None:
    with pytest.raises(InvalidValue):
        validate_relative_path(path)


@pytest.mark.parametrize("address", ["-oProxyCommand=x", "a b", "$(id)", "1.2.3.4;x", ""])
def test_bad_addresses(address: str) -> None:
    with pytest.raises(InvalidValue):
        validate_address(address)


@pytest.mark.parametrize("address", ["127.0.0.11", "web-1.example.com", "::1", "[fe80::1]"])
def test_good_addresses(address: str) -> None:
    assert validate_address(address) == address


def test_modes() -> None:
    assert validate_mode("644") == "0644"
    with pytest.raises(InvalidValue):
        validate_mode("0999")


def test_layout_refuses_hostile_versions() -> None:
    layout = ReleaseLayout("/srv/app")
    assert layout.release_dir("1.0.0") == "/srv/app/releases/1.0.0"
    with pytest.raises(InvalidValue):
        layout.release_dir("../../x")
