"""Options several ``tocsin`` commands share."""

from __future__ import annotations

from pathlib import Path

import click

conf_option = click.option(
    "--conf",
    "conf_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Conf file, or a folder holding tocsin.toml (default: $TOCSIN_CONF, else "
    "conf/tocsin.toml).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
