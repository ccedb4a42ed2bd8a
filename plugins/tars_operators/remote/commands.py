"""Shell commands Tars runs on hosts. Every interpolated value goes through ``shlex.quote``.

User commands from the config (install hooks, service commands) are passed whole, quoted, to
``sh -ec`` so that our own script around them keeps its control flow and error messages.
Exit codes of our own refusals: 65 sha256 mismatch, 66 unsafe archive (or template dest), 67
would replace the current release, 68 release not staged, 69 no download tool (or no python3 for
the pull check), 70 not enough free space under the deploy root.
"""

from __future__ import annotations

import json
import math
import posixpath
import re
import shlex
from dataclasses import dataclass
from typing import Any, Sequence

from tars_operators.config.schema import ArchiveLimits
from tars_operators.errors import InvalidValue
from tars_operators.remote.archive import host_check_command
from tars_operators.remote.layout import TMP_PREFIX, UPLOAD_DIR, ReleaseLayout, rand_token
from tars_operators.remote.validate import (
    validate_mode,
    validate_relative_path,
    validate_sha256,
    validate_version,
)

q = shlex.quote
EXIT_SHA_MISMATCH, EXIT_UNSAFE, EXIT_IS_CURRENT, EXIT_NOT_STAGED, EXIT_NO_TOOL = 65, 66, 67, 68, 69
EXIT_NO_SPACE = 70
STATE_MARK = "@@tars-state "  # first line of the state output: the token of its markers
META_MAX_BYTES = 64 << 10  # a longer release.json is read as corrupt


def user_command(command: str, label: str, cwd: str | None = None) -> str:
    """Run a user's shell snippet in its own ``sh -ec``; on failure name it on stderr."""
    inner = f"cd {q(cwd)} && sh -ec {q(command)}" if cwd else f"sh -ec {q(command)}"
    inner += " </dev/null"
    return f'( {inner} ) || {{ rc=$?; echo {q(f"tars: {label} failed")}" (exit $rc)" >&2; exit $rc; }}'


def state_command(layout: ReleaseLayout, *, cleanup: bool = False, token: str | None = None) -> str:
    """Print ``current`` and every release's metadata (parsed by ``steps.state.parse_state``).

    ``current`` is reported as the directory it resolves to (``cd -P``, whatever mix of
    relative and absolute links leads there) next to the resolved ``releases`` dir, plus the
    raw link text for messages. Framing: every line is ``@@<token> <key> <hex>``, the token
    random per call and announced on the first line, every value (paths, names, each
    release.json cut at ``META_MAX_BYTES`` + 1 bytes) hex-encoded on its marker's line, and an
    ``end`` line last — no content can start a line of its own. With ``cleanup``, first remove
    what interrupted stages left behind (temp release dirs, partial uploads, staged templates);
    complete uploads are kept for a retry.
    """
    tok = validate_token(token or rand_token(8))
    mark = f"@@{tok} "
    hexed = "od -An -v -tx1 | tr -d ' \\n'"
    lines = [f"printf '%s\\n' {q(STATE_MARK + tok)}", "unset CDPATH",
             f'tars_field() {{ printf \'%s%s\\n\' "$1" "$(printf \'%s\' "$2" | {hexed})"; }}',
             f"cd {q(layout.deploy_root)} 2>/dev/null || {{ printf '%s\\n' {q(mark + 'absent')}; exit 0; }}"]
    if cleanup:
        lines.append(
            f"rm -rf releases/{TMP_PREFIX}* {UPLOAD_DIR}/*.part-* {UPLOAD_DIR}/tpl-* 2>/dev/null || true"
        )
    lines += [
        f"tars_field {q(mark + 'releases ')} \"$(cd -P releases 2>/dev/null && pwd -P)\"",
        f"tars_field {q(mark + 'current ')} \"$(cd -P current 2>/dev/null && pwd -P)\"",
        f"tars_field {q(mark + 'link ')} \"$(readlink current 2>/dev/null)\"",
        "for d in releases/*/; do",
        '  [ -d "$d" ] || continue',
        '  n=${d#releases/}; n=${n%/}',
        f'  tars_field {q(mark + "release ")} "$n"',
        f'  if [ -f "$d.tars/release.json" ]; then printf \'%s%s\\n\' {q(mark + "meta ")} '
        f'"$(head -c {META_MAX_BYTES + 1} "$d.tars/release.json" 2>/dev/null | {hexed})"; fi',
        "done",
        f"printf '%s\\n' {q(mark + 'end')}",
    ]
    return "\n".join(lines)


def validate_token(token: str) -> str:
    """Tokens in names and markers are ours: hex only."""
    if not re.fullmatch(r"[0-9a-f]{4,64}", token):
        raise InvalidValue(f"token {token[:80]!r} must be 4-64 lower-case hex digits")
    return token


def is_current_test(version: str) -> str:
    """A shell condition: ``current`` resolves to ``releases/<version>`` or inside it.

    Compares resolved paths (``cd -P``), so relative, absolute and chained links all count;
    false when either side does not exist.
    """
    rel = f"releases/{validate_version(version)}"
    return (f'{{ _d="$(CDPATH= cd -P {q(rel)} 2>/dev/null && pwd -P)" && '
            f'_c="$(CDPATH= cd -P current 2>/dev/null && pwd -P)" && '
            f'case "$_c/" in "$_d/"*) true ;; *) false ;; esac; }}')


def write_file_lines(path: str, content: str) -> list[str]:
    """Shell lines writing ``content`` to ``path`` atomically (tmp + rename)."""
    return [f"printf '%s\\n' {q(content)} > {q(path + '.tmp')}", f"mv -f {q(path + '.tmp')} {q(path)}"]


def meta_json(meta: dict[str, Any]) -> str:
    return json.dumps(meta, sort_keys=True)


def write_meta_command(layout: ReleaseLayout, version: str, meta: dict[str, Any]) -> str:
    """Rewrite a release's ``.tars/release.json`` atomically."""
    release = layout.release_dir(version)
    lines = ["set -e", f"[ -d {q(release)} ] || {{ echo {q(f'tars: release {version} is not on this host')} >&2; exit {EXIT_NOT_STAGED}; }}",
             f"mkdir -p {q(release + '/.tars')}"]
    return "\n".join(lines + write_file_lines(layout.meta_path(version), meta_json(meta)))


@dataclass(frozen=True)
class TemplateFile:
    """A rendered template uploaded to ``staged`` and moved to ``dest`` inside the release."""

    staged: str
    dest: str
    mode: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "dest", validate_relative_path(self.dest, "template dest"))
        object.__setattr__(self, "mode", validate_mode(self.mode))


def download_lines(url: str, target: str, token: str, timeout: float) -> list[str]:
    """Lines making the host download ``url`` to ``target`` with curl, wget or python3."""
    if not re.match(r"^https?://[^\s]+$", url):
        raise InvalidValue(f"pull delivery needs an http(s) URL, got {url[:120]!r}")
    part, t = f"{target}.part-{token}", str(int(max(timeout, 1)))
    fetch_py = "import shutil,sys,urllib.request as u; shutil.copyfileobj(u.urlopen(sys.argv[1], timeout=float(sys.argv[3])), open(sys.argv[2], 'wb'))"
    return [
        f"if [ ! -f {q(target)} ]; then",
        f"  mkdir -p {q(posixpath.dirname(target))}",
        f"  if command -v curl >/dev/null 2>&1; then curl -fsSL --max-time {t} -o {q(part)} {q(url)}",
        f"  elif command -v wget >/dev/null 2>&1; then wget -q -T {t} -O {q(part)} {q(url)}",
        f"  elif command -v python3 >/dev/null 2>&1; then python3 -c {q(fetch_py)} {q(url)} {q(part)} {t}",
        f"  else echo 'tars: pull delivery needs curl, wget or python3 on the host' >&2; exit {EXIT_NO_TOOL}; fi",
        f"  mv -f {q(part)} {q(target)}",
        "fi",
    ]


def verify_lines(tarball: str, sha256: str) -> list[str]:
    """Lines checking the tarball's sha256 on the host (deleting it if wrong)."""
    sha = validate_sha256(sha256)
    return [
        f"sum=$( (sha256sum {q(tarball)} 2>/dev/null || shasum -a 256 {q(tarball)}) | cut -d' ' -f1)",
        f'if [ "$sum" != {sha} ]; then rm -f {q(tarball)}; '
        f'echo "tars: sha256 mismatch of the artifact on the host: expected {sha}, got $sum" >&2; '
        f"exit {EXIT_SHA_MISMATCH}; fi",
    ]


@dataclass(frozen=True)
class InstallPlan:
    """Everything the install command needs; built by ``steps.stage``.

    ``unpacked_bytes``: what the archive unpacks to, known when the controller checked it
    (push); with ``check_on_host`` (pull) the host's check computes it.
    """

    layout: ReleaseLayout
    version: str
    token: str
    tarball: str
    sha256: str
    meta: dict[str, Any]
    templates: Sequence[TemplateFile] = ()
    pre_install: Sequence[str] = ()
    post_install: Sequence[str] = ()
    check_on_host: bool = False
    download_url: str | None = None
    download_timeout: float = 300.0
    cleanup: Sequence[str] = ()  # paths removed at the end (staged template dir)
    limits: ArchiveLimits = ArchiveLimits()
    unpacked_bytes: int = 0


def refuse_lines(tarball: str, code: int, message: str) -> str:
    """Remove the tarball (a refused artifact leaves nothing behind), say why, exit ``code``."""
    return f"{{ rm -f {q(tarball)}; echo {q('tars: ' + message)} >&2; exit {code}; }}"


def archive_check_lines(plan: InstallPlan) -> list[str]:
    """Set ``_size`` (bytes unpacked), checking the archive on the host for pull delivery."""
    if not plan.check_on_host:
        return [f"_size={int(plan.unpacked_bytes)}"]
    return [
        "command -v python3 >/dev/null 2>&1 || " + refuse_lines(
            plan.tarball, EXIT_NO_TOOL, "pull delivery checks the archive on the host with python3 (>= 3.8), "
            "which is missing; install it or use artifact.delivery: push"),
        f"_size=$({host_check_command(plan.tarball, plan.limits)}) || {{ rm -f {q(plan.tarball)}; exit {EXIT_UNSAFE}; }}",
    ]


def free_space_lines(plan: InstallPlan) -> list[str]:
    """Refuse (exit 70) unless the deploy root keeps ``min_free_mb`` free after unpacking."""
    root, min_kb = plan.layout.deploy_root, int(math.ceil(plan.limits.min_free_mb * 1024))
    garbled = refuse_lines(plan.tarball, EXIT_NO_SPACE, f"cannot read the free space under {root} (df -Pk)")
    return [
        "_avail=$(df -Pk . 2>/dev/null | awk 'NR==2 {print $4}')",
        f'case "$_avail" in ""|*[!0-9]*) {garbled} ;; esac',
        "_kb=$(( (_size + 1023) / 1024 ))",
        f'if [ "$_avail" -lt $(( _kb + {min_kb} )) ]; then rm -f {q(plan.tarball)}; '
        f'echo "tars: not enough free space under "{q(root)}": ${{_avail}} KiB available, the release '
        f'unpacks to ${{_kb}} KiB and artifact.limits.min_free_mb keeps {min_kb} KiB free; free some '
        f'space (prune old releases) or lower the limit" >&2; exit {EXIT_NO_SPACE}; fi',
    ]


def template_lines(tmp: str, templates: Sequence[TemplateFile]) -> list[str]:
    """Move rendered templates in; each dest directory must resolve inside the release
    (``cd -P``), checked one level at a time before anything is created below it."""
    if not templates:
        return []
    lines = [
        f"_t=$(cd -P {q(tmp)} && pwd -P)",
        'tars_dest_dir() { { [ -d "$1" ] || mkdir "$1"; } && _r=$(cd -P "$1" && pwd -P) && '
        'case "$_r/" in "$_t/"*) true ;; *) false ;; esac || { echo "tars: template dest $2: $1 is '
        f'not a directory inside the release; refusing" >&2; exit {EXIT_UNSAFE}; }}; }}',
    ]
    for tpl in templates:
        dest, parts = f"{tmp}/{tpl.dest}", tpl.dest.split("/")[:-1]
        lines += [f"tars_dest_dir {q(tmp + '/' + '/'.join(parts[:i]))} {q(tpl.dest)}" for i in range(1, len(parts) + 1)]
        lines += [f"mv -f -T {q(tpl.staged)} {q(dest)}", f"chmod {tpl.mode} {q(dest)}"]
    return lines


def install_command(plan: InstallPlan) -> str:
    """Check, unpack into releases/.tmp-<version>-<rand>, install, rename to releases/<version>.

    Before anything is unpacked: sha256, the archive check (pull: on the host), free space;
    each refusal removes the tarball, and staged templates go on any exit. After unpacking: no ``.tars`` from the artifact, no
    setuid/setgid/sticky bits. ``HostSession.run`` stops it with the step
    (``remote.watchdog``): it never finishes unattended after a timeout or a dead worker.
    """
    layout, version = plan.layout, validate_version(plan.version)
    tmp, final = layout.tmp_release_dir(version, plan.token), layout.release_dir(version)
    old = f"{tmp}-old"
    lines = ["set -e", f"cd {q(layout.deploy_root)}", "mkdir -p releases shared"]
    if plan.cleanup:  # staged templates and scripts go whatever happens (they may hold secrets)
        lines.append(f"trap {q('rm -rf ' + ' '.join(q(p) for p in plan.cleanup))} EXIT")
    if plan.download_url:
        lines += download_lines(plan.download_url, plan.tarball, plan.token, plan.download_timeout)
    lines += verify_lines(plan.tarball, plan.sha256)
    lines += archive_check_lines(plan) + free_space_lines(plan)
    lines += [f"mkdir {q(tmp)}", f"tar -xzf {q(plan.tarball)} --no-same-owner -C {q(tmp)}",
              # Belt and braces: Tars's metadata never comes from the artifact.
              f"rm -rf {q(tmp + '/.tars')}",
              f"find {q(tmp)} ! -type l \\( -perm -4000 -o -perm -2000 -o -perm -1000 \\) "
              "-exec chmod u-s,g-s,o-t {} +"]
    lines += template_lines(tmp, plan.templates)
    lines += [user_command(cmd, f"pre_install #{i + 1}", tmp) for i, cmd in enumerate(plan.pre_install)]
    lines += [
        f"if {is_current_test(version)}; then "
        f"echo {q(f'tars: release {version} is the current release; refusing to replace it')} >&2; "
        f"exit {EXIT_IS_CURRENT}; fi",
        f"if [ -e {q(final)} ]; then mv -T {q(final)} {q(old)}; fi",
        f"mv -T {q(tmp)} {q(final)}",
    ]
    lines += [user_command(cmd, f"post_install #{i + 1}", final) for i, cmd in enumerate(plan.post_install)]
    # Metadata last: a release dir without it is incomplete and gets replaced on retry.
    lines.append(f"mkdir -p {q(final + '/.tars')}")
    lines += write_file_lines(layout.meta_path(version), meta_json(plan.meta))
    lines.append(f"rm -rf {q(old)} {q(plan.tarball)} " + " ".join(q(p) for p in plan.cleanup))
    return "\n".join(lines)


def activate_command(
    layout: ReleaseLayout, version: str, token: str, *, stop: str | None, start: str,
    meta: dict[str, Any], switch: bool = True, restart: bool = False,
    adopt: tuple[str, dict[str, Any]] | None = None, restart_command: str | None = None,
) -> str:
    """Write metadata, stop the service, point ``current`` at the release atomically, start.

    Metadata first: a worker killed after the switch leaves a release that says which run
    switched it and what it replaced. ``adopt`` writes the metadata of the release being
    switched away from (one without Tars metadata) so it stays a rollback target. Without
    ``switch``, ``restart`` still stops and starts the service, or runs ``restart_command``
    (the app's ``service.restart``) when one is given.
    """
    link_tmp = f"current.tmp-{token}"
    release = layout.release_dir(version)
    lines = ["set -e", f"cd {q(layout.deploy_root)}"]
    if switch:
        lines.append(f"[ -f {q(layout.meta_path(version))} ] || {{ echo {q(f'tars: release {version} is not staged on this host')} >&2; exit {EXIT_NOT_STAGED}; }}")
    else:
        lines.append(f"[ -d {q(release)} ] || {{ echo {q(f'tars: release {version} is not on this host')} >&2; exit {EXIT_NOT_STAGED}; }}")
    if adopt is not None:
        old = layout.release_dir(adopt[0])
        lines += [f"if [ -d {q(old)} ]; then mkdir -p {q(old + '/.tars')}",
                  *write_file_lines(layout.meta_path(adopt[0]), meta_json(adopt[1])), "fi"]
    lines.append(f"mkdir -p {q(release + '/.tars')}")
    lines += write_file_lines(layout.meta_path(version), meta_json(meta))
    if restart_command and restart and not switch:
        lines.append(user_command(restart_command, "service restart"))
        return "\n".join(lines)
    if stop and (switch or restart):
        lines.append(f"if [ -e current ]; then {user_command(stop, 'service stop')}; fi")
    if switch:
        lines += [f"ln -sfn {q(layout.link_target(version))} {q(link_tmp)}", f"mv -T {q(link_tmp)} current"]
    lines.append(user_command(start, "service start"))
    return "\n".join(lines)


def remove_releases_command(layout: ReleaseLayout, versions: Sequence[str], token: str) -> str:
    """Remove releases (never the one ``current`` resolves to): rename away first, so none is
    seen half-deleted."""
    lines = ["cd " + q(layout.deploy_root) + " || exit 0"]
    for version in versions:
        target, gone = layout.link_target(version), f"releases/{TMP_PREFIX}{version}-{token}-del"
        lines.append(
            f"if [ -d {q(target)} ] && ! {is_current_test(version)}; then "
            f"mv -T {q(target)} {q(gone)} && rm -rf {q(gone)}; fi"
        )
    return "\n".join(lines)
