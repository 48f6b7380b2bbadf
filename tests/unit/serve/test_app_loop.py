"""``serve.event_loop``: the API runs on uvloop by default, on asyncio's own loop when asked, and refuses
anything else when the settings load."""

from __future__ import annotations

import asyncio

import pytest

from riskctl.config import load_settings
from riskctl.errors import ConfigError
from riskctl.serve.app import loop_factory


@pytest.mark.parametrize(("name", "module"), [("uvloop", "uvloop"), ("asyncio", "asyncio")])
def test_each_event_loop_runs_a_coroutine(name: str, module: str) -> None:
    async def where() -> str:
        await asyncio.sleep(0)
        return type(asyncio.get_running_loop()).__module__

    with asyncio.Runner(loop_factory=loop_factory(name)) as runner:
        assert runner.run(where()).split(".")[0] == module


def test_uvloop_is_the_default_and_a_bad_name_is_refused_with_the_key() -> None:
    assert load_settings(env={}).serve.event_loop == "uvloop"
    with pytest.raises(ConfigError, match="serve.event_loop"):
        load_settings(env={"RISKCTL_SERVE_EVENT_LOOP": "trio"})
    with pytest.raises(ConfigError, match="serve.event_loop"):
        loop_factory("trio")
