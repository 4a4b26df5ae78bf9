"""The canonical event catalog: every event type Tocsin knows and the fields it guarantees.

One data table (``CATALOG``) drives three things:

- the intake's check: a known type missing a required field, or carrying a catalog
  field of the wrong type, is refused with a 400 naming the field's path;
- ``docs/events.md`` (``tocsin events catalog --markdown``), so the page cannot drift;
- source plugins' mapping tables (``ProviderMapping``), checked against it by the tests:
  every route must produce every field its canonical type requires.

Types outside the catalog (``stripe.customer.created``, a merchant's own
``order.shipped``) are accepted and routed unless ``[intake] unknown_types = "reject"``.
Dates that scenarios schedule against (card expiry, ``due_at``, ``link_expires_at``,
the next debit date...) are marked ``schedule=True``.

``table`` holds ``CATALOG``, ``check`` the intake's check, ``docs`` the generated page,
``mapping`` and ``conversions`` what source plugins build their tables from; everyone
imports from here (plugins: ``gateway.catalog``).
"""

from __future__ import annotations

from .check import UnknownTypes, check_event, suggest_type
from .conversions import (
    canonical_id,
    e164,
    iban_masked,
    id_of,
    integer,
    lower,
    provider_type,
    string,
    string_map,
    timestamp,
    upper,
)
from .docs import catalog_json, catalog_markdown
from .mapping import Const, FieldMap, Getter, ProviderMapping, Route, Take, dig
from .table import (
    CATALOG,
    TYPES,
    EventSpec,
    FieldSpec,
    Kind,
    opt,
    req,
    required_paths,
    schedule_paths,
)

__all__ = [
    "CATALOG",
    "TYPES",
    "Const",
    "EventSpec",
    "FieldMap",
    "FieldSpec",
    "Getter",
    "Kind",
    "ProviderMapping",
    "Route",
    "Take",
    "UnknownTypes",
    "canonical_id",
    "catalog_json",
    "catalog_markdown",
    "check_event",
    "dig",
    "e164",
    "iban_masked",
    "id_of",
    "integer",
    "lower",
    "opt",
    "provider_type",
    "req",
    "required_paths",
    "schedule_paths",
    "string",
    "string_map",
    "suggest_type",
    "timestamp",
    "upper",
]
