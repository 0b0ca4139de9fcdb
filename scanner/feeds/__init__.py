"""Market data feeds: the synthetic generator and decoders of recorded data files."""
