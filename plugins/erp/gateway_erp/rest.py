"""rest: an in-house system reached by ``call`` mappings only, with headers from conf."""

from __future__ import annotations

from .config import RestOptions
from .connector import Connector
from .transport import Transport


class Rest(Connector):
    name = "rest"

    def __init__(self, transport: Transport, options: RestOptions) -> None:
        super().__init__(transport)
        self.options = options

    def auth_headers(self) -> dict[str, str]:
        return {name: value.reveal() for name, value in self.options.headers.items()}
