"""Fixtures starting the local vendor servers: each is a factory taking the server's options;
every server it started is stopped at teardown.

    def test_x(alpaca_stream):
        server = alpaca_stream(messages, batch=50)   # started; server.url is ws://127.0.0.1:PORT/v2/iex
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.vendors.alpaca_server import AlpacaRestServer, AlpacaStreamServer
from tests.vendors.polygon_server import PolygonRestServer, PolygonStreamServer


def _factory(cls: type) -> Iterator[Callable[..., Any]]:
    started: list[Any] = []

    def make(*args: Any, **kwargs: Any) -> Any:
        server = cls(*args, **kwargs).start()
        started.append(server)
        return server

    yield make
    for s in started:
        s.stop()


@pytest.fixture
def alpaca_stream() -> Iterator[Callable[..., AlpacaStreamServer]]:
    yield from _factory(AlpacaStreamServer)


@pytest.fixture
def alpaca_rest() -> Iterator[Callable[..., AlpacaRestServer]]:
    yield from _factory(AlpacaRestServer)


@pytest.fixture
def polygon_stream() -> Iterator[Callable[..., PolygonStreamServer]]:
    yield from _factory(PolygonStreamServer)


@pytest.fixture
def polygon_rest() -> Iterator[Callable[..., PolygonRestServer]]:
    yield from _factory(PolygonRestServer)
