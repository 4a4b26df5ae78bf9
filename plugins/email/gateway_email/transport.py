"""SMTP over a small pool of aiosmtplib connections, with replies mapped to retry or fail.

Mapping (see docs/email.md):

- the session (connect, greeting, EHLO, STARTTLS/TLS, AUTH) failing, whatever the
  reply: ``TransientError``. It is about the server or this channel's conf, never
  about one message, and retrying lets operators fix it without losing messages;
- a transaction reply (MAIL FROM, RCPT TO, DATA): 4xx ``TransientError``, 5xx
  ``PermanentError``, with the server's code and text in the reason; except the 5xx
  that say the session lacks TLS or AUTH (``SESSION_CODES``): transient, as above;
- a connection lost, reset or timing out: ``TransientError``.

A pooled connection the server closed while it sat idle is replaced before use; if it
turns out dead only when the transaction starts, the message is sent once more over a
new connection.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from dataclasses import dataclass
from typing import Literal

import aiosmtplib

from gateway import DeliveryError, PermanentError, TransientError

Security = Literal["starttls", "tls", "none"]
DEFAULT_PORTS: dict[str, int] = {"starttls": 587, "tls": 465, "none": 25}
#: Of a server's reply, this much goes into the delivery's history.
REPLY_CHARS = 300


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    security: Security
    username: str | None
    password: str | None
    local_hostname: str | None
    ca_file: str | None
    timeout: float

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


def _reply(code: int, text: str) -> str:
    text = " ".join(text.split())
    if len(text) > REPLY_CHARS:
        text = text[:REPLY_CHARS] + "..."
    return f"{code} {text}".strip()


#: 5xx replies about this channel's session, not the message: STARTTLS or AUTH required
#: (530, RFC 3207/4954), AUTH mechanism too weak (534), bad credentials (535), encryption
#: required for AUTH (538). Fixing the conf makes the same message go through.
SESSION_CODES = frozenset({530, 534, 535, 538})


#: Enhanced status codes (RFC 3463) of a refused recipient that mean the mailbox does not
#: exist and never will: bad mailbox (5.1.1), bad domain (5.1.2), bad syntax (5.1.3),
#: moved (5.1.6), domain accepts no mail (5.1.10, RFC 7505), mailbox disabled (5.2.1).
#: The address goes to the suppression list as a hard bounce. A full mailbox (5.2.2) or
#: a policy refusal (5.7.x: spam, reputation) says nothing about the address.
HARD_BOUNCES = frozenset({"5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10", "5.2.1"})
#: Without an enhanced code, these replies to RCPT TO mean "no such mailbox" (RFC 5321).
HARD_BOUNCE_REPLIES = frozenset({550, 551, 553})
_ENHANCED = re.compile(r"\s*([245]\.\d{1,3}\.\d{1,3})\b")


def hard_bounce(code: int, text: str) -> bool:
    """Whether a refused recipient's reply proves the address does not exist."""
    found = _ENHANCED.match(text)
    if found is not None:
        return found.group(1) in HARD_BOUNCES
    return code in HARD_BOUNCE_REPLIES


def by_code(code: int, reason: str, *, suppress: str | None = None) -> DeliveryError:
    """4xx: try again later; 5xx: never. Anything else is a broken server: try again."""
    if 500 <= code <= 599 and code not in SESSION_CODES:
        return PermanentError(reason, status=code, suppress=suppress)
    return TransientError(reason, status=code)


def transaction_error(exc: BaseException, where: str) -> DeliveryError | None:
    """What a failed MAIL/RCPT/DATA exchange means for the delivery (None: not ours)."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        exc = exc.recipients[0]
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        reply = _reply(exc.code, exc.message)
        if isinstance(exc, aiosmtplib.SMTPRecipientRefused):
            bounced = "hard_bounce" if hard_bounce(exc.code, exc.message) else None
            return by_code(
                exc.code,
                f"SMTP {where} refused recipient {exc.recipient}: {reply}",
                suppress=bounced,
            )
        if isinstance(exc, aiosmtplib.SMTPSenderRefused):
            return by_code(exc.code, f"SMTP {where} refused sender {exc.sender}: {reply}")
        if isinstance(exc, aiosmtplib.SMTPDataError):
            return by_code(exc.code, f"SMTP {where} refused the message: {reply}")
        return by_code(exc.code, f"SMTP {where}: {reply}")
    if isinstance(exc, TimeoutError):
        return TransientError(f"SMTP {where}: no answer in time")
    if isinstance(exc, aiosmtplib.SMTPException | OSError):
        return TransientError(f"SMTP {where}: {type(exc).__name__}: {exc}")
    return None


def _keepable(exc: BaseException, smtp: aiosmtplib.SMTP) -> bool:
    """After a refused transaction aiosmtplib sends RSET: the connection may serve again."""
    refused = isinstance(exc, aiosmtplib.SMTPResponseException | aiosmtplib.SMTPRecipientsRefused)
    return refused and smtp.is_connected and getattr(exc, "code", 0) != 421


class SmtpPool:
    """At most ``size`` connections, each carrying one transaction at a time."""

    def __init__(self, settings: SmtpSettings, size: int) -> None:
        self.settings = settings
        self.size = size
        self._idle: list[aiosmtplib.SMTP] = []
        self._slots = asyncio.Semaphore(size)
        self._tls: ssl.SSLContext | None = None
        if settings.security != "none":
            # Reads the CA file now (start-up), not on the event loop while sending.
            self._tls = ssl.create_default_context(cafile=settings.ca_file)

    async def _connect(self) -> aiosmtplib.SMTP:
        s = self.settings
        smtp = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            username=s.username,
            password=s.password,
            local_hostname=s.local_hostname,
            timeout=s.timeout,
            use_tls=s.security == "tls",
            start_tls=s.security == "starttls",
            tls_context=self._tls,
        )
        try:
            await smtp.connect()
        except aiosmtplib.SMTPAuthenticationError as exc:
            smtp.close()
            raise TransientError(
                f"SMTP {s.where}: authentication as {s.username!r} failed: "
                f"{_reply(exc.code, exc.message)}",
                status=exc.code,
            ) from None
        except aiosmtplib.SMTPResponseException as exc:
            smtp.close()
            raise TransientError(
                f"SMTP {s.where} refused the session: {_reply(exc.code, exc.message)}",
                status=exc.code,
            ) from None
        except TimeoutError:
            smtp.close()
            raise TransientError(f"SMTP {s.where}: no answer within {s.timeout:g}s") from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            smtp.close()
            raise TransientError(
                f"cannot connect to SMTP {s.where}: {type(exc).__name__}: {exc}"
            ) from None
        except BaseException:
            smtp.close()
            raise
        return smtp

    async def _checkout(self) -> tuple[aiosmtplib.SMTP, bool]:
        """A live connection, and whether it served before."""
        while self._idle:
            smtp = self._idle.pop()
            if smtp.is_connected:
                return smtp, True
            smtp.close()
        return await self._connect(), False

    @staticmethod
    async def _transaction(smtp: aiosmtplib.SMTP, sender: str, recipient: str, data: bytes) -> None:
        refused, _ = await smtp.sendmail(sender, [recipient], data)
        if recipient in refused:  # partly refused envelopes: this recipient's own result
            reply = refused[recipient]
            raise aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, recipient)

    async def _send_now(self, sender: str, recipient: str, data: bytes) -> None:
        where = self.settings.where
        smtp, reused = await self._checkout()
        try:
            try:
                await self._transaction(smtp, sender, recipient, data)
            except aiosmtplib.SMTPServerDisconnected:
                if not reused:
                    raise
                # The server dropped a pooled connection unnoticed: one try on a new one.
                smtp.close()
                smtp = await self._connect()
                await self._transaction(smtp, sender, recipient, data)
        except Exception as exc:
            if _keepable(exc, smtp):
                self._idle.append(smtp)
            else:
                smtp.close()
            if isinstance(exc, DeliveryError):
                raise
            mapped = transaction_error(exc, where)
            if mapped is None:
                raise
            raise mapped from None
        except BaseException:  # cancelled mid-transaction: the connection's state is unknown
            smtp.close()
            raise
        self._idle.append(smtp)

    async def send(self, sender: str, recipient: str, data: bytes) -> None:
        """Deliver ``data`` to one recipient, or raise Transient/PermanentError."""
        timeout = self.settings.timeout
        try:
            async with asyncio.timeout(timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise TransientError(
                f"SMTP {self.settings.where}: all {self.size} connections stayed busy "
                f"for {timeout:g}s (raise pool_size?)"
            ) from None
        try:
            async with asyncio.timeout(timeout):
                await self._send_now(sender, recipient, data)
        except TimeoutError:
            raise TransientError(
                f"SMTP {self.settings.where}: not done within {timeout:g}s"
            ) from None
        finally:
            self._slots.release()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for smtp in idle:
            try:
                async with asyncio.timeout(min(self.settings.timeout, 5.0)):
                    await smtp.quit()
            except (TimeoutError, aiosmtplib.SMTPException, OSError):
                pass
            finally:
                smtp.close()
