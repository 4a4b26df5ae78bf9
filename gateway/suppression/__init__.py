"""The suppression list: addresses (emails, phone numbers) that must not get optional
messages, or any message at all, and why (docs/operations.md, "Suppression list").

Checked by the worker just before each send (``gateway.worker``), fed by providers'
answers, receipts and replies (``feed``), managed with ``tocsin suppress`` (``cli``) and
the admin API, which call the ``operations`` functions: add, remove, list, check.
"""

from ..address import normalise_address as normalise
from .feed import feed_error, feed_receipt
from .operations import add, check, list_entries, remove
from .store import (
    BLOCKS_ALL,
    OPTIONAL_CATEGORIES,
    REASONS,
    Entry,
    Reason,
    SuppressionList,
    skip_reason,
)

__all__ = [
    "BLOCKS_ALL",
    "OPTIONAL_CATEGORIES",
    "REASONS",
    "Entry",
    "Reason",
    "SuppressionList",
    "add",
    "check",
    "feed_error",
    "feed_receipt",
    "list_entries",
    "normalise",
    "remove",
    "skip_reason",
]
