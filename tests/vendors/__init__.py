"""Local vendor protocol servers (Alpaca, Polygon/Massive) on loopback ports, for tests."""
