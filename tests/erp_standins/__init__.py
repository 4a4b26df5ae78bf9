"""Stand-ins for the ERPs the erp plugin talks to: real aiohttp servers on 127.0.0.1.

Each implements the call shapes of /work/shared/reference/payment-domain.md section 5
(and the erp plugin's docs) -- Odoo's ``/jsonrpc`` execute_kw and ``/json/2``, Dolibarr's
REST API, ERPNext's resources and ``get_payment_entry`` -- keeps state (invoices with
currency, total, what is left to pay and state; payments with their references; notes),
and refuses what the real systems refuse: a bad key, an unknown model, method or field,
paying a draft or a paid invoice, a value of the wrong type. Where the real system
coerces (Odoo and Frappe read ``"12.5"`` as a number), so do they.

``faults`` injects failures, each used once: an HTTP 503 (``http_503``), the ERP's own
concurrency error (``concurrency``), or a payment booked whose answer is then lost
(``lose_answer``: the ERP commits, the client sees a 503 -- a crash between the two).
"""

from .common import CURRENCY_IDS, Faults, serve
from .dolibarr import DolibarrInvoice, DolibarrPayment, DolibarrStandin
from .erpnext import ErpNextStandin, SalesInvoice
from .inhouse import InHouseStandin
from .odoo import OdooStandin

__all__ = [
    "CURRENCY_IDS",
    "DolibarrInvoice",
    "DolibarrPayment",
    "DolibarrStandin",
    "ErpNextStandin",
    "Faults",
    "InHouseStandin",
    "OdooStandin",
    "SalesInvoice",
    "serve",
]
