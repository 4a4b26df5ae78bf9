"""The pluggy markers. Plugins write ``from gateway import hookimpl``."""

import pluggy

PROJECT = "tocsin"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
