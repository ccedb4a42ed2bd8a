"""The host-side guard every remote command runs in: a command never outlives its step.

``guarded(command, timeout)`` is the text ``HostSession.run`` sends instead of ``command``.
sshd runs it with the login shell as a session (and process group) leader, so ``kill -- -$$``
reaches everything the command started that did not leave the group on purpose (a service
daemonised with ``setsid`` keeps running). The guard starts one watcher, then runs the command
in a subshell with stdin from ``/dev/null``, exactly as an unguarded command whose stdin is at
EOF: same exit code, stdout and stderr. The watcher kills the whole group (TERM, then KILL
``KILL_AFTER`` seconds later) when either

- the controller goes away: the controller keeps the channel's stdin open and never writes to
  it, so EOF means the channel was closed (the controller's own timeout), the connection was
  cut or the worker died; or
- the host-side deadline passes: the step's timeout plus ``DEADLINE_GRACE`` (the controller
  gives up first; this catches a controller that hangs without closing anything).

When the command ends normally the guard stops the watcher and nothing else is touched.
Needs a POSIX login shell, ``cat`` and ``sleep`` on the host, and ``timeout`` (coreutils or a
recent busybox) for the host-side deadline; without it only the controller-gone kill works.
"""

from __future__ import annotations

import math
import shlex

DEADLINE_GRACE = 5.0  # seconds the host waits past the controller's timeout before killing
KILL_AFTER = 2  # seconds between TERM and KILL of the process group


def host_deadline(timeout: float, grace: float = DEADLINE_GRACE) -> int:
    """Whole seconds after which the host kills the command's group on its own."""
    return max(1, math.ceil(timeout + grace))


def guarded(command: str, timeout: float, *, grace: float = DEADLINE_GRACE, kill_after: int = KILL_AFTER) -> str:
    """``command`` wrapped so its process group dies with the controller or at the host deadline.

    Send it with the channel's stdin left open (EOF on it is the signal that the controller
    is gone). ``timeout`` is the controller's own limit for the command, in seconds.
    """
    deadline = host_deadline(timeout, grace)
    # `timeout … cat` ends at stdin EOF (0) or at the deadline (124), whichever comes first. Any
    # other status means `timeout` is missing or unlike GNU's: watch for EOF alone rather than
    # kill a command at once. The watcher then ignores TERM to survive the group TERM and KILL.
    watcher = (f"timeout {deadline} cat <&3 >/dev/null 2>&1; "
               "case $? in 0|124) ;; *) cat <&3 >/dev/null 2>&1 ;; esac; "
               f"trap '' TERM; kill -TERM -$$; sleep {int(kill_after)}; kill -KILL -$$")
    return "\n".join([
        "exec 3<&0 </dev/null",
        f"( {watcher} ) >/dev/null 2>&1 &",
        "tars_watcher=$!",
        "exec 3<&-",
        f"( eval {shlex.quote(command)} )",
        "tars_rc=$?",
        "kill $tars_watcher 2>/dev/null",
        "exit $tars_rc",
    ])
