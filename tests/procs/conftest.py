"""The local vendor servers (tests/vendors/conftest.py) for the live-feed process tests."""

from tests.vendors.conftest import alpaca_rest, alpaca_stream, polygon_rest, polygon_stream  # noqa: F401
