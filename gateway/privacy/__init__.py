"""Personal data: what history keeps of a recipient, retention, and erasure by customer.

Modules (imported by name; this package imports none of them, so ``gateway.history``
can use ``recipients`` without pulling erasure in):

- ``recipients``: masked recipients, their keyed hash, the audit variables of a record;
- ``redact``: what erasure replaces in an event, a record, a scenario's state;
- ``forget``: ``forget_customer``, erasure of one customer on every shard and tier;
- ``retention``: the background trim, and ``tocsin retention --dry-run``;
- ``audit``: the ``<prefix>:audit`` stream;
- ``outboxes``: local outbox files (email ``.eml``, SMS JSON lines).

docs/data-protection.md says what is kept, for how long, and why.
"""
