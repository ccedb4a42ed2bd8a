"""How Tars's SSH client negotiates: AES-GCM first, every cipher paramiko knows still offered,
and a socket that acknowledges what it reads at once."""

from __future__ import annotations

import socket

import paramiko
import pytest

from tars_operators.hooks.ssh import _AckingSocket, _transport

pytestmark = pytest.mark.unit


def test_aes_gcm_comes_first_and_nothing_paramiko_offers_is_dropped() -> None:
    ours, theirs = socket.socketpair()
    try:
        offered = _transport(ours).get_security_options().ciphers
        usual = paramiko.Transport(theirs).get_security_options().ciphers
    finally:
        ours.close()
        theirs.close()
    assert offered[:2] == ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
    assert sorted(offered) == sorted(usual) and offered[2:] == tuple(
        c for c in usual if "gcm" not in c)


def test_the_acking_socket_reads_like_a_socket() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    try:
        raw = socket.create_connection(server.getsockname())
        sock = _AckingSocket(raw.family, raw.type, raw.proto, fileno=raw.detach())
        peer, _ = server.accept()
        with sock, peer:
            peer.sendall(b"SSH-2.0-x\r\n")
            assert sock.recv(64) == b"SSH-2.0-x\r\n"
            peer.close()
            assert sock.recv(64) == b""  # end of stream: no option set on a closed read
    finally:
        server.close()
