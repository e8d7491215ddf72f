"""A real SMTP server for tests: aiosmtpd on a loopback port, recording what it accepts and refusing the
addresses it is told to refuse (550), so that Django's SMTP backend talks the real protocol over TCP."""

import email
import email.policy
from email.message import EmailMessage

from aiosmtpd.controller import Controller

from tests.stack import free_port


class _Recorder:
    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], EmailMessage]] = []
        self.refused: set[str] = set()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802 (aiosmtpd's name)
        if address in self.refused:
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
        message = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 OK queued"


class SMTPServer:
    """`received`: (sender, recipients, message) in arrival order; add an address to `refused` to have
    its RCPT refused."""

    def __init__(self) -> None:
        self._recorder = _Recorder()
        self.port = free_port()
        self._controller = Controller(self._recorder, hostname="127.0.0.1", port=self.port)

    @property
    def received(self) -> list[tuple[str, list[str], EmailMessage]]:
        return self._recorder.received

    @property
    def refused(self) -> set[str]:
        return self._recorder.refused

    def messages_to(self, address: str) -> list[EmailMessage]:
        return [message for _, recipients, message in self.received if address in recipients]

    def start(self) -> "SMTPServer":
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()


def smtp_env(server: SMTPServer) -> dict[str, str]:
    """The environment that points another process's Django e-mail at `server` (tests/stack.py)."""
    return {
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(server.port),
        "EMAIL_USE_TLS": "false",
    }


def use_smtp(settings, server: SMTPServer) -> None:
    """Points Django's e-mail at `server` (pytest-django's `settings` fixture restores it afterwards)."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", server.port
    settings.EMAIL_USE_TLS, settings.EMAIL_USE_SSL = False, False
    settings.EMAIL_HOST_USER, settings.EMAIL_HOST_PASSWORD = "", ""
    settings.EMAIL_TIMEOUT = 5
