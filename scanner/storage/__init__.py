"""Storage helpers without sockets: the local spool format, row conversions (COPY buffers, Arrow
tables, Parquet), the archive manifest and the startup-history arrays. The I/O lives in
`procs.storage`."""


class StorageError(RuntimeError):
    """A user-facing storage problem (bad URL, missing schema, failed archive verification)."""
