"""Local sandbox fleet for Tars: sshd hosts on 127.0.0.x, the demo app, HAProxy, artifacts.

    from sandbox import Sandbox
    sb = Sandbox(".sandbox"); sb.up(hosts=10); sb.hosts; sb.reset(); sb.down()
"""

from __future__ import annotations

from sandbox.errors import PortInUseError, SandboxError
from sandbox.fleet import Sandbox
from sandbox.layout import Host
from sandbox.status import HostStatus, Status

__all__ = ["Host", "HostStatus", "PortInUseError", "Sandbox", "SandboxError", "Status"]
