"""An SMTP receiver on loopback for tests (aiosmtpd): records each mail, parsed."""

from __future__ import annotations

import html
import json
import logging
import re
import socket
import threading
from contextlib import contextmanager
from email import message_from_bytes, policy
from email.message import Message
from typing import Any, Iterator

from aiosmtpd.controller import Controller


class Mailbox:
    """Every mail the receiver accepted, in order; ``port`` is where it listens."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.mails: list[Message] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        with self.lock:
            # policy.default: headers decoded (a subject with '→' is RFC 2047-encoded on the wire)
            self.mails.append(message_from_bytes(envelope.original_content or envelope.content,
                                                 policy=policy.default))
        return "250 OK"

    def subjects(self) -> list[str]:
        with self.lock:
            return [str(m["Subject"]) for m in self.mails]

    def matching(self, text: str) -> list[Message]:
        """Mails whose subject or body contains ``text``."""
        with self.lock:
            return [m for m in self.mails if text in str(m["Subject"]) or text in body(m)]

    def connection(self, **extra: Any) -> str:
        """An Airflow connection (JSON, for ``AIRFLOW_CONN_<ID>``) to this receiver."""
        return json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": self.port,
                           "extra": {"disable_ssl": True, "disable_tls": True, "timeout": 5,
                                     "retry_limit": 0, "from_email": "tars@example.test",
                                     **extra}})


def body(mail: Message) -> str:
    """A mail's text as a reader sees it: the HTML part's text, entities decoded."""
    for part in mail.walk():
        if part.get_content_type() == "text/html":
            raw = part.get_payload(decode=True)
            assert isinstance(raw, bytes)
            text = raw.decode(part.get_content_charset() or "utf-8")
            return html.unescape(re.sub(r"</?pre>", "", text))
    return ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def smtp_receiver() -> Iterator[Mailbox]:
    """A running SMTP receiver on 127.0.0.1, stopped on exit even when the test fails."""
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command
    box = Mailbox(free_port())
    controller = Controller(box, hostname="127.0.0.1", port=box.port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()
