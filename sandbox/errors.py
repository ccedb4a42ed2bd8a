"""Typed errors raised by the sandbox."""

from __future__ import annotations


class SandboxError(RuntimeError):
    """A sandbox operation failed; the message says what, where and what next."""


class PortInUseError(SandboxError):
    """A port the sandbox needs is already taken on some address."""

    def __init__(self, address: str, port: int, what: str) -> None:
        super().__init__(
            f"{what}: port {port} is already in use on {address}; "
            f"stop whatever listens there or choose another port/address range"
        )
        self.address = address
        self.port = port
