"""Regenerate the docs that are generated from code: ``python docs/generate.py``.

- ``docs/events.md``: the event catalog (``gateway/catalog/table.py``), also printed by
  ``tocsin events catalog --markdown``;
- the mapping tables in ``docs/sources.md``, between ``<!-- BEGIN mapping NAME -->``
  and ``<!-- END mapping NAME -->``, from each source plugin's ``MAPPING``.

Tests fail when the files differ from what this writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gateway_centralpay import MAPPING as CENTRALPAY
from gateway_stripe import MAPPING as STRIPE

from gateway.catalog import ProviderMapping, catalog_markdown

DOCS = Path(__file__).resolve().parent
MAPPINGS: dict[str, ProviderMapping] = {"centralpay": CENTRALPAY, "stripe": STRIPE}


def sources_doc(text: str) -> str:
    """``docs/sources.md`` with each marked block replaced by its table."""
    for name, mapping in MAPPINGS.items():
        begin, end = f"<!-- BEGIN mapping {name} -->", f"<!-- END mapping {name} -->"
        head, found, rest = text.partition(begin)
        if not found or end not in rest:
            raise SystemExit(f"docs/sources.md: no {begin} ... {end} block")
        text = f"{head}{begin}\n{mapping.markdown()}\n{end}{rest.split(end, 1)[1]}"
    return text


def main() -> int:
    (DOCS / "events.md").write_text(catalog_markdown())
    sources = DOCS / "sources.md"
    sources.write_text(sources_doc(sources.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
