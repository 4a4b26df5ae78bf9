"""``verify = "fetch"``: read the notified object back from CentralPay's REST API.

``GET {api}/paymentRequest/{id}`` and ``GET {api}/transaction/{id}`` with HTTP Basic auth
are what informatique-jss/jss-backend's CentralPayDelegateServiceImpl calls (getPaymentRequest,
getTransaction, which also insists on ``transactionStatus == "SUCCESS"`` before trusting a
payment). The other objects' paths follow the same ``/{resource}/{id}`` pattern of
ref-api.centralpay.net and are marked unverified in docs/sources.md.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
import msgspec

from gateway import PermanentError, TransientError, outbound_error, parse_retry_after

#: Event-name prefix -> (REST resource, the object's id field). Longest prefixes first.
RESOURCES: tuple[tuple[str, str, str], ...] = (
    ("PAYMENTREQUEST_", "paymentRequest", "paymentRequestId"),
    ("SCT_TRANSACTION_", "sctTransaction", "sctTransactionId"),
    ("SDD_TRANSACTION_", "sddTransaction", "sddTransactionId"),
    ("TRANSACTION_", "transaction", "transactionId"),
    ("REFUND_", "refund", "refundId"),
    ("DISPUTE_", "dispute", "disputeId"),
    ("MANDATE_", "mandate", "mandateId"),
    ("SUBSCRIPTION_", "subscription", "subscriptionId"),
    ("INSTALLMENT_", "installmentPayment", "installmentPaymentId"),
    ("PAYOUT_", "payout", "payoutId"),
    ("CARD_", "card", "cardId"),
)
#: Resources whose path a real integration calls (the rest follow the pattern).
EVIDENCED = frozenset({"paymentRequest", "transaction"})

#: What the fetched object must say for the notification's name to be believed: the
#: object is CentralPay's word, the name is only the caller's. jss-backend trusts a
#: transaction only with ``transactionStatus == "SUCCESS"``; a payment request is paid
#: when ``paymentStatus == "PAID"`` (its CentralPayPaymentRequest constants). A
#: transaction authorised then captured moves on to CAPTURED, then CLEARED once debited
#: (doc-api.centralpay.net/en/transactions-status): the object is read when the job
#: runs, possibly after a retry or a replay, so those still confirm the payment.
_PAID_TRANSACTION = ("transactionStatus", frozenset({"SUCCESS", "CAPTURED", "CLEARED"}))
STATUS_CHECKS: Mapping[str, tuple[str, frozenset[str]]] = {
    "TRANSACTION_SUCCEEDED": _PAID_TRANSACTION,
    "TRANSACTION_SUCCESS": _PAID_TRANSACTION,
    "TRANSACTION_CAPTURED": _PAID_TRANSACTION,
    "PAYMENTREQUEST_PAID": ("paymentStatus", frozenset({"PAID"})),
}


def resource(name: str) -> tuple[str, str] | None:
    """``(resource, id field)`` for an event name, or ``None`` for an unknown object."""
    for prefix, path, id_field in RESOURCES:
        if name.startswith(prefix):
            return path, id_field
    return None


def object_id(name: str, obj: Mapping[str, Any]) -> str | None:
    found = resource(name)
    value = obj.get(found[1]) if found else None
    return str(value) if isinstance(value, str | int) and str(value) else None


def basic_auth(login: str, secret: str) -> str:
    """RFC 7617 Basic credentials (aiohttp 3.12 deprecates its BasicAuth helper)."""
    return "Basic " + base64.b64encode(f"{login}:{secret}".encode()).decode("ascii")


async def fetch_object(
    http: aiohttp.ClientSession, root: str, auth: str, name: str, ident: str
) -> dict[str, Any]:
    """The object as CentralPay holds it now; errors say what to do about them."""
    found = resource(name)
    if found is None:
        raise PermanentError(
            f"cannot confirm {name}: no CentralPay API resource is known for it "
            "(add the name to the mapping, then `tocsin dlq replay`)"
        )
    url = f"{root.rstrip('/')}/{found[0]}/{quote(ident, safe='')}"
    try:
        async with http.get(
            url,
            headers={"Authorization": auth, "Accept": "application/json"},
            allow_redirects=False,
        ) as response:
            body = await response.read()
            status = response.status
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        error = outbound_error(exc)
        raise type(error)(f"CentralPay API {found[0]}: {error.reason}") from None
    what = f"CentralPay {found[0]} {ident}"
    if status == 404:
        raise PermanentError(f"{what} does not exist: the notification is refused as forged")
    if status in (401, 403):
        raise PermanentError(
            f"CentralPay refused the API credentials (HTTP {status}): fix "
            "[sources.NAME.api] login/secret, then `tocsin dlq replay` these notifications"
        )
    if status == 429 or status >= 500:
        raise TransientError(f"{what}: HTTP {status}", status=status, retry_after=retry_after)
    if status != 200:
        raise PermanentError(f"{what}: HTTP {status}: {body[:200].decode(errors='replace')}")
    try:
        obj = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise TransientError(f"{what}: the answer is not JSON") from None
    if not isinstance(obj, dict):
        raise PermanentError(f"{what}: the answer is not an object")
    if object_id(name, obj) != ident:
        raise PermanentError(f"{what}: CentralPay answered another object")
    check = STATUS_CHECKS.get(name)
    if check is not None and obj.get(check[0]) not in check[1]:
        raise PermanentError(
            f"{what}: notified as {name} but CentralPay says {check[0]} = "
            f"{obj.get(check[0])!r}: refused"
        )
    return obj
