"""Shell run on the nginx host: read the upstream file, swap it in and reload verified, watch workers.

Pure builders (every value quoted); ``NginxBalancer`` runs them through its runner. The write is a
compare-and-swap under `flock`. A reload is verified twice: its command must exit 0, and the
master (``pid_file``) must start a new generation of workers — nginx answers `-s reload` with
exit 0 even when the master then fails to apply the file. Either failure puts the previous file
back (only if the file is still the one written: sha-guarded) so the file never says what nginx
does not do. New workers alone are not enough: until the master tells the old ones to stop, they
still accept requests with the old file, so each old worker must be gone or "shutting down". The old workers' pids are printed: they finish the requests in flight and exit,
which is what a drain waits for.
"""

from __future__ import annotations

import base64
import hashlib
import shlex

q = shlex.quote
EXIT_CHANGED, EXIT_INVALID = 75, 65  # file changed since read (read again) / `nginx -t` refused
EXIT_RELOAD_FAILED, EXIT_NOT_RENEWED = 66, 67
SHA_MARK = "@@sha256 "
WORKERS_MARK = "@@old-workers"
UNSEEN = "?"  # the master cannot be seen (no pid file, not running, another pid namespace)

# Children of a pid, from /proc (no ps needed); the comm field may hold spaces, so the fields
# are read after its closing ')'.
_CHILDREN = r"""children() {
  want=$1
  for s in /proc/[0-9]*/stat; do
    read -r line 2>/dev/null < "$s" || continue
    set -- ${line##*) }
    if [ "$2" = "$want" ]; then p=${s#/proc/}; echo "${p%/stat}"; fi
  done
  return 0
}
renewed() {  # $1: the master now; $old: the workers before the reload
  fresh=""
  for p in $(children "$1"); do case " $old " in *" $p "*) ;; *) fresh=1;; esac; done
  [ -n "$fresh" ] || return 1
  for p in $old; do  # each old worker gone, or no longer accepting ("is shutting down")
    grep -qs nginx "/proc/$p/cmdline" || continue
    grep -qs "shutting down" "/proc/$p/cmdline" || return 1
  done
  return 0
}
master_pid() {
  m=$(cat "$pid_file" 2>/dev/null) || return 1
  case "$m" in ''|*[!0-9]*) return 1;; esac
  [ -d "/proc/$m" ] && echo "$m"
}"""


def read_command(path: str) -> str:
    """Print the file's sha256 on a marked first line, then the file."""
    return f"printf '{SHA_MARK}%s\\n' \"$(sha256sum < {q(path)} | cut -c1-64)\" && cat {q(path)}"


def _restore(f: str, bak: str, new_sha: str) -> str:
    """Put the backup back if the file is still ours; say which happened on stderr."""
    return (f'if [ "$(sha256sum < {f} | cut -c1-64)" = {q(new_sha)} ]; then mv -f {bak} {f}; '
            f"echo \"{f} restored to its previous content\" >&2; else "
            f"echo \"{f} changed meanwhile: NOT restored\" >&2; fi")


def write_command(path: str, expected_sha: str, new_text: str, reload: str, *,
                  pid_file: str = "/run/nginx.pid", renew_timeout: float = 10.0) -> str:
    """Swap in new_text if the file still has expected_sha; `nginx -t`; reload verified.

    Prints ``@@old-workers <pids>`` (or ``@@old-workers ?`` when the master cannot be seen).
    """
    data = base64.b64encode(new_text.encode()).decode()
    new_sha = hashlib.sha256(new_text.encode()).hexdigest()
    f, new, bak = q(path), q(path + ".tars-new"), q(path + ".tars-bak")
    polls = max(1, int(renew_timeout / 0.05))
    restore = _restore(f, bak, new_sha)
    return "\n".join([
        "set -e",
        f"pid_file={q(pid_file)}",
        _CHILDREN,
        f"exec 9>>{q(path + '.tars-lock')}",
        "flock -w 60 9",
        f'[ "$(sha256sum < {f} | cut -c1-64)" = {q(expected_sha)} ] || '
        f"{{ echo 'upstream file changed since read' >&2; exit {EXIT_CHANGED}; }}",
        'master=$(master_pid) || master=""',
        'old=""; if [ -n "$master" ]; then old=$(children "$master" | tr "\\n" " "); fi',
        f"printf %s {q(data)} | base64 -d > {new}",
        f"chmod --reference={f} {new} 2>/dev/null || true",
        f"cp -p {f} {bak}",
        f"mv -f {new} {f}",
        f"if ! out=$(nginx -t 2>&1); then mv -f {bak} {f}; echo \"$out\" >&2; exit {EXIT_INVALID}; fi",
        f"if ! out=$(sh -ec {q(reload)} 2>&1); then echo \"reload failed: $out\" >&2; {restore}; "
        f"exit {EXIT_RELOAD_FAILED}; fi",
        f'if [ -z "$master" ]; then echo "{WORKERS_MARK} {UNSEEN}"; exit 0; fi',
        f"i=0; while [ $i -lt {polls} ]; do",
        '  now=$(master_pid) || now=""',
        f'  if [ -n "$now" ] && renewed "$now"; then echo "{WORKERS_MARK} $old"; exit 0; fi',
        "  i=$((i+1)); sleep 0.05",
        "done",
        f'echo "nginx (master $master) did not replace its workers within {renew_timeout:g}s of '
        f'the reload: it did not apply the file (see its error log)" >&2',
        restore,
        f"exit {EXIT_NOT_RENEWED}",
    ])


def alive_command(pids: tuple[int, ...]) -> str:
    """Print which of pids are still nginx processes (zombies and reused pids do not count)."""
    listed = " ".join(str(int(p)) for p in pids)
    return f"for p in {listed}; do grep -qs nginx /proc/$p/cmdline && echo $p; done; true"


def parse_old_workers(stdout: str) -> tuple[int, ...] | None:
    """Pids printed by the write script; None when the master could not be seen."""
    for line in stdout.splitlines():
        if line.startswith(WORKERS_MARK):
            words = line[len(WORKERS_MARK):].split()
            if words == [UNSEEN]:
                return None
            return tuple(int(w) for w in words if w.isdigit())
    return None
