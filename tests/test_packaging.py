"""The wheel holds every package: setuptools is given an explicit list (pyproject.toml),
and an editable install (what the tests run on) imports a package missing from it
anyway, so only this check notices one that a real install would lack."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_under_gateway_and_plugins_is_in_the_wheel() -> None:
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(conf["packages"])
    dirs = {name: ROOT / path for name, path in conf["package-dir"].items()}
    found = set()
    for top, folder in dirs.items():
        for init in folder.rglob("__init__.py"):
            relative = init.parent.relative_to(folder)
            found.add(".".join((top, *relative.parts)))
    assert found - listed == set(), "add these to [tool.setuptools] packages"
    assert listed - found == set(), "listed packages that do not exist"
