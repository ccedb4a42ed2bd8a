"""A blank host on demand (tests of host assembly): a machine with nothing of the app on it.

``blank_host`` stops the host's app, removes its deploy root and sets its HAProxy server to
MAINT; SSH still works. ``Sandbox.reset`` brings it back to the baseline like every host.
"""

from __future__ import annotations

import shutil

from sandbox import haproxy, hosts as onhost
from sandbox.fleet import Sandbox
from sandbox.layout import Host


def blank_host(sb: Sandbox, name: str) -> Host:
    """Make ``name`` a new machine: no app running, no deploy root, MAINT in the backend."""
    host = sb.host(name)
    sb.haproxy(f"set server {haproxy.BACKEND}/{name} state maint")
    onhost.stop_app(host)
    shutil.rmtree(host.deploy_root, ignore_errors=True)
    return host
