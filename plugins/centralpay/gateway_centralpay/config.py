"""``[sources.NAME] type = "centralpay"``: how a deployment trusts CentralPay's notifications.

CentralPay publishes no signature header or algorithm (its "events and webhooks" page
says webhooks are signed with the secret key and names neither; a real PHP handler checks
nothing and a real Java back end polls the API instead: ../shared/reference/real-systems.md).
So the choice is explicit, with no default that would take forged events:

- ``verify = "fetch"``: accept the notification, then read the object from CentralPay's
  REST API by its id and build the event from CentralPay's answer;
- ``verify = "hmac"``: the deployment has an HMAC header (configured: name, encoding);
- ``verify = "none"``: only with ``allow_from``, for a network path that is trusted.

``allow_from`` (CIDRs) filters by the caller's address on top of any of them.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from gateway import Duration, Secret

#: CentralPay's REST API roots (ref-api.centralpay.net; the same two URLs in a real
#: Laravel service and informatique-jss/jss-backend's configuration).
LIVE_API = "https://api.centralpay.net/v2/rest"
SANDBOX_API = "https://test-api.centralpay.net/v2/rest"


class CentralPayApi(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[sources.NAME.api]``: the merchant's API credentials, for ``verify = "fetch"``."""

    #: Empty: the live API, or the sandbox when ``livemode = false``.
    url: str = ""
    #: HTTP Basic user and password: the merchant's API login and secret.
    login: Secret
    secret: Secret
    timeout: Duration = Duration(10)


class CentralPayConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    verify: Literal["fetch", "hmac", "none"]
    api: CentralPayApi | None = None
    #: ``verify = "hmac"``: the merchant secret key(s); several while rolling one.
    secrets: list[Secret] = msgspec.field(default_factory=list)
    #: ``verify = "hmac"``: the request header holding the signature.
    signature_header: str = ""
    signature_encoding: Literal["hex", "base64"] = "hex"
    #: Text before the signature to strip, e.g. ``"sha256="``.
    signature_prefix: str = ""
    #: Callers' addresses or CIDRs; others get a 403. Empty: any address.
    allow_from: list[str] = msgspec.field(default_factory=list)
    #: Whether this endpoint receives production (true) or sandbox (false) events.
    livemode: bool = True
    #: This deployment's event names for names of the mapping table, e.g.
    #: ``{ "PAYMENT_REQUEST_PAID" = "PAYMENTREQUEST_PAID" }``.
    aliases: dict[str, str] = msgspec.field(default_factory=dict)


def problems(config: CentralPayConfig) -> list[str]:
    """What is wrong with a conf, each as ``field: reason``; all of them."""
    out = []
    hmac_only = {
        "secrets": bool(config.secrets),
        "signature_header": bool(config.signature_header),
        "signature_prefix": bool(config.signature_prefix),
    }
    if config.verify == "fetch" and config.api is None:
        out.append(
            'api: verify = "fetch" reads each object back from CentralPay: give '
            "[sources.NAME.api] login and secret (the merchant's API credentials)"
        )
    if config.verify != "fetch" and config.api is not None:
        out.append(f'api: only used with verify = "fetch" (this source has {config.verify!r})')
    if config.verify == "hmac":
        if not config.secrets:
            out.append('secrets: verify = "hmac" needs at least one merchant secret key')
        if not config.signature_header.strip():
            out.append("signature_header: name the header your deployment signs in")
    else:
        out += [
            f'{name}: only used with verify = "hmac"' for name, given in hmac_only.items() if given
        ]
    if config.verify == "none" and not config.allow_from:
        out.append(
            'allow_from: verify = "none" would take forged events from anywhere: '
            "list the addresses CentralPay calls from, or use fetch"
        )
    return out
