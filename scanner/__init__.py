"""The scanner domain: metric catalogue, rules, bars, indicators, feeds, alerts.

Pure functions and classes over numpy arrays; no processes, no sockets (see DESIGN.md).
"""
