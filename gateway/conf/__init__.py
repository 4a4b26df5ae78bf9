"""Typed conf: ``tocsin.toml`` (plus included files) decoded into msgspec Structs.

Every problem is collected, never just the first (within one table too), and reported
as ``file:LINE: dotted.path: reason`` (``file: dotted.path: reason`` where the line
cannot be told) so ops can fix a conf in one pass.
Relative paths in a conf file are resolved against that file's folder.

``model`` holds the sections and tables, ``decode`` turns conf data into them, ``read``
reads the files, ``checks`` checks across fields; everyone imports from here.
"""

from __future__ import annotations

from .checks import MIN_TOKEN
from .decode import convert, describe_validation_error, every_problem
from .model import (
    Action,
    AdminSection,
    AdminToken,
    Audience,
    Category,
    Conf,
    GatewaySection,
    HistorySection,
    IntakeSection,
    Match,
    Member,
    MetricsSection,
    OutboundSection,
    PluginsSection,
    PluginTable,
    PrivacySection,
    RedisSection,
    RetentionSection,
    Rule,
    Scenario,
    Secret,
    Step,
    WorkerSection,
)
from .read import (
    CONF_ENV_VAR,
    CONF_FILE_NAME,
    DEFAULT_CONF_PATH,
    default_conf_path,
    load_conf,
    read_conf,
)

__all__ = [
    "CONF_ENV_VAR",
    "CONF_FILE_NAME",
    "DEFAULT_CONF_PATH",
    "MIN_TOKEN",
    "Action",
    "AdminSection",
    "AdminToken",
    "Audience",
    "Category",
    "Conf",
    "GatewaySection",
    "HistorySection",
    "IntakeSection",
    "Match",
    "Member",
    "MetricsSection",
    "OutboundSection",
    "PluginTable",
    "PluginsSection",
    "PrivacySection",
    "RedisSection",
    "RetentionSection",
    "Rule",
    "Scenario",
    "Secret",
    "Step",
    "WorkerSection",
    "convert",
    "default_conf_path",
    "describe_validation_error",
    "every_problem",
    "load_conf",
    "read_conf",
]
