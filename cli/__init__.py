"""The `scanner` command (typer). Commands take options and hand off to plain functions."""
