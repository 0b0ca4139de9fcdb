"""The notifier's senders: one delivery attempt to an e-mail (SMTP), webhook (HTTP, HMAC-signed)
or SMS (Twilio-style HTTP) destination, and what an attempt needs (`Entry`, `Job`).

Each send raises `DeliveryError` on failure; `permanent` ones (HTTP 4xx other than 408/425/429,
SMTP 5xx) are dead-lettered at once by the delivery state machine (`procs.notifier.delivery`).
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

import httpx

from scanner.notify import messages, signing
from scanner.notify.destinations import Destination, EmailDestination, SmsDestination, WebhookDestination

log = logging.getLogger("scanner.notifier")
RETRYABLE_HTTP = frozenset({408, 425, 429})


class DeliveryError(Exception):
    """One failed attempt; `permanent` ones are not retried."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(eq=False)
class Entry:
    """One stream entry and how many of its deliveries are still open."""

    id: str
    raw: bytes
    alert: dict[str, Any]
    open: int = 0
    track: bool = False  # note per-destination progress (more than one destination)


@dataclass(eq=False)
class Job:
    """One entry to one destination, across its attempts."""

    entry: Entry
    dest: Destination
    attempts: int = 0
    error: str = ""
    sent_to: set[str] = field(default_factory=set)  # SMS recipients already sent: not re-sent on retry


class Senders:
    """The I/O of one attempt per destination kind; raises DeliveryError on failure."""

    def __init__(self) -> None:
        self.http = httpx.Client(follow_redirects=False)

    def send(self, job: Job) -> None:
        d = job.dest
        try:
            if isinstance(d, WebhookDestination):
                self.webhook(d, job)
            elif isinstance(d, SmsDestination):
                self.sms(d, job)
            else:
                self.email(d, job)
        except DeliveryError:
            raise
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise DeliveryError(f"SMTP recipients refused: {exc.recipients}", all(c >= 500 for c in codes)) from exc
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}", exc.smtp_code >= 500) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"SMTP: {type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _check(resp: httpx.Response) -> None:
        if resp.is_success:
            return
        code = resp.status_code
        raise DeliveryError(f"HTTP {code}: {resp.text[:200]}", 400 <= code < 500 and code not in RETRYABLE_HTTP)

    def webhook(self, d: WebhookDestination, job: Job) -> None:
        body = job.entry.raw
        extra = {k: v.get_secret_value() for k, v in d.headers.items()}
        headers = {"Content-Type": "application/json", signing.DELIVERY_HEADER: job.entry.id, **extra,
                   **signing.signed_headers(d.secret.get_secret_value(), body)}
        self._check(self.http.post(d.url, content=body, headers=headers, timeout=d.timeout_s))

    def sms(self, d: SmsDestination, job: Job) -> None:
        text = messages.sms_body(job.entry.alert)
        for number in d.to:
            if number in job.sent_to:
                continue
            resp = self.http.post(d.messages_url(), data={"To": number, "From": d.from_number, "Body": text},
                                  auth=(d.account_sid, d.auth_token.get_secret_value()), timeout=d.timeout_s)
            self._check(resp)
            job.sent_to.add(number)

    def email(self, d: EmailDestination, job: Job) -> None:
        alert = job.entry.alert
        msg = EmailMessage()
        msg["Subject"] = messages.email_subject(alert, d.subject_prefix)
        msg["From"] = d.from_addr
        msg["To"] = ", ".join(d.to)
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = make_msgid("alert")
        msg["X-Scanner-Alert"] = job.entry.id
        msg.set_content(messages.email_body(alert))
        msg.add_attachment(job.entry.raw, maintype="application", subtype="json", filename="alert.json")
        tls = ssl.create_default_context()  # verifies the server (SMTP_SSL's own default would not)
        smtp = (smtplib.SMTP_SSL(d.smtp_host, d.smtp_port, timeout=d.timeout_s, context=tls)
                if d.security == "ssl" else smtplib.SMTP(d.smtp_host, d.smtp_port, timeout=d.timeout_s))
        with smtp:
            if d.security == "starttls":
                smtp.starttls(context=tls)
            if d.username:
                smtp.login(d.username, d.password.get_secret_value() if d.password else "")
            refused = smtp.send_message(msg)
        if refused:
            log.warning("%s: some recipients refused: %s", d.name, refused)

    def close(self) -> None:
        self.http.close()
