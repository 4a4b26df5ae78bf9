"""Options several ``tocsin`` commands share."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import click

F = TypeVar("F", bound=Callable[..., Any])

_CONF_HELP = (
    "Conf file, or a folder holding tocsin.toml (default: $TOCSIN_CONF, else conf/tocsin.toml)."
)

conf_option = click.option(
    "--conf", "conf_path", type=click.Path(path_type=Path), default=None, help=_CONF_HELP
)
log_format_option = click.option(
    "--log-format",
    type=click.Choice(["human", "json"]),
    default=None,
    help="Log lines on stderr: human, or json (one object per line). Default: "
    "gateway.log_format in the conf, else human. Personal data is masked in both.",
)
log_traffic_option = click.option(
    "--log-traffic/--no-log-traffic",
    default=None,
    help="One INFO line per accepted event and per final delivery outcome (default: "
    "gateway.log_traffic in the conf, else on). Off: dead letters still log at WARNING.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")


def conf_argument(command: F) -> F:
    """``[CONF]`` positional (kept for compatibility) or ``--conf``, like every other
    command; the function gets ``conf_arg``, whichever was given."""

    @functools.wraps(command)
    def merged(*args: Any, conf_arg: Path | None, conf_path: Path | None, **kwargs: Any) -> Any:
        if conf_arg is not None and conf_path is not None and conf_arg != conf_path:
            raise click.UsageError(f"two confs given ({conf_arg} and --conf {conf_path}): pick one")
        return command(*args, conf_arg=conf_arg or conf_path, **kwargs)

    with_option = conf_option(merged)
    argument = click.argument("conf_arg", required=False, type=click.Path(path_type=Path))
    return cast(F, argument(with_option))
