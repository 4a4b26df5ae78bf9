"""Lua scripts shipped in ``gateway/lua``, called by SHA and reloaded after a Redis restart."""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError, ResponseError


class Script:
    """One Lua script. ``add_to`` queues it in a pipeline without a SCRIPT EXISTS round trip."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = resources.files("gateway").joinpath(f"lua/{name}.lua").read_text()
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    async def load(self, redis: Redis) -> None:
        await redis.script_load(self.source)

    def add_to(self, pipe: Pipeline, keys: list[str], args: list[Any]) -> None:
        pipe.evalsha(self.sha, len(keys), *keys, *args)

    async def __call__(self, redis: Redis, keys: list[str], args: list[Any]) -> Any:
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.load(redis)
            return await redis.evalsha(self.sha, len(keys), *keys, *args)


def is_noscript(result: object) -> bool:
    return isinstance(result, NoScriptError) or (
        isinstance(result, ResponseError) and str(result).startswith("NOSCRIPT")
    )


FANOUT = Script("fanout")
PROMOTE = Script("promote")
SETTLE = Script("settle")
DISABLE = Script("disable")
REPLAY = Script("replay")
SCENARIO_CAS = Script("scenario_cas")
SCENARIO_STEP = Script("scenario_step")
ENQUEUE_MANY = Script("enqueue_many")
