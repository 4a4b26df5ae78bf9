"""A stand-in for CentralPay's REST API (``/v2/rest``), for ``verify = "fetch"``: a real
aiohttp server on 127.0.0.1 holding objects and answering what the real API answers.

Evidence (re-read before changing anything here):
- ``GET /v2/rest/paymentRequest/{id}`` and ``GET /v2/rest/transaction/{id}`` with HTTP
  Basic auth (login:secret), JSON answers: informatique-jss/jss-backend,
  CentralPayDelegateServiceImpl (getPaymentRequest, getTransaction), and a Laravel service
  (CentralpayPaymentService: ``auth => [client_id, secret]``, both API roots).
- The objects' fields: jss-backend's CentralPayPaymentRequest (``paymentRequestId``,
  ``merchantPaymentRequestId``, ``totalAmount`` typed Float, ``currency``,
  ``paymentRequestStatus`` ACTIVE/CLOSED, ``paymentStatus`` PAID, ``breakdowns``),
  CentralPayBreakdown (``amount``, ``endpoint``, ``email``, ``paid``, ``payments``),
  CentralPayPayment (``uuid``, ``paymentMethod``) and CentralPayTransaction
  (``transactionStatus``, ``captureStatus``, ``amount``).
- Unknown ids answer 404 and a wrong login or secret 401, as any REST API behind Basic
  auth does; CentralPay's error body is not published, so the stand-in's is plain JSON
  and the client reads only the status.
The other resources (``refund``, ``sctTransaction``...) follow the same ``/{resource}/{id}``
pattern, as docs/sources.md marks them: unverified.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

#: The id field of each resource's objects (the path segment under /v2/rest).
ID_FIELDS = {
    "paymentRequest": "paymentRequestId",
    "transaction": "transactionId",
    "refund": "refundId",
    "sctTransaction": "sctTransactionId",
    "sddTransaction": "sddTransactionId",
    "dispute": "disputeId",
    "mandate": "mandateId",
    "subscription": "subscriptionId",
    "installmentPayment": "installmentPaymentId",
    "payout": "payoutId",
    "card": "cardId",
}


@dataclass
class CentralPayApiStandin:
    LOGIN = "merchant-login-42"
    SECRET = "merchant-api-secret-7f"

    url: str = ""  # the API root, ``http://127.0.0.1:PORT/v2/rest``, once served
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    #: Answer 503 to this many requests first (the API down for a moment).
    unavailable: int = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v2/rest/{resource}/{ident}", self._get)
        return app

    def put(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        self.objects[(resource, str(obj[ID_FIELDS[resource]]))] = obj
        return obj

    async def _get(self, request: web.Request) -> web.Response:
        resource, ident = request.match_info["resource"], request.match_info["ident"]
        self.calls.append(f"GET /{resource}/{ident}")
        expected = base64.b64encode(f"{self.LOGIN}:{self.SECRET}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {expected}":
            return web.json_response(
                {"error": "Unauthorized"},
                status=401,
                headers={"WWW-Authenticate": 'Basic realm="api"'},
            )
        if self.unavailable > 0:
            self.unavailable -= 1
            return web.json_response({"error": "Service Unavailable"}, status=503)
        if resource not in ID_FIELDS:
            return web.json_response({"error": "Not Found"}, status=404)
        obj = self.objects.get((resource, ident))
        if obj is None:
            return web.json_response({"error": "Not Found"}, status=404)
        return web.json_response(obj)


def payment_request(
    ident: str,
    invoice: str,
    total: float,
    *,
    paid_shares: tuple[int, ...] = (),
    shares: tuple[int, ...] | None = None,
    email: str = "compta@atelier-dupont.fr",
    currency: str = "EUR",
) -> dict[str, Any]:
    """A payment request as CentralPay's API returns it: ``totalAmount`` a float of minor
    units, one breakdown per share (each with its pay link), payments recorded on the
    breakdowns paid. ``paid_shares`` lists the indexes of the shares paid."""
    amounts = shares or (int(total),)
    breakdowns = []
    for index, amount in enumerate(amounts):
        paid = index in paid_shares
        breakdowns.append(
            {
                "paymentRequestBreakdownId": f"{ident}-b{index}",
                "amount": float(amount),
                "email": email,
                "firstName": "Claire",
                "lastName": "Dupont",
                "endpoint": f"https://payment.centralpay.net/pr/{ident}/{index}",
                "paid": paid,
                # paid_shares lists the shares in the order they were paid
                "lastPaymentAttempt": (
                    f"2026-11-2{paid_shares.index(index) + 1}T10:00:00.000+01:00" if paid else None
                ),
                "payments": (
                    [{"uuid": f"{ident}-tx{index}", "paymentMethod": "TRANSACTION"}] if paid else []
                ),
            }
        )
    everything = len(paid_shares) == len(amounts)
    return {
        "paymentRequestId": ident,
        "merchantPaymentRequestId": invoice,
        "creationDate": "2026-11-20T09:00:00.000+01:00",
        "deadline": "2026-12-20T23:59:59.000+01:00",
        "currency": currency,
        "totalAmount": float(total),
        "paymentRequestStatus": "CLOSED" if everything else "ACTIVE",
        "paymentStatus": "PAID" if everything else ("PARTIAL" if paid_shares else "PENDING"),
        "breakdowns": breakdowns,
    }
