"""Shared-memory primitives: segments, the control block, seqlocks, the column table, rings.

Nothing here knows about markets. See each module's docstring for its layout table and its
memory-ordering contract; `shm.platform.check_memory_model()` refuses to run where the
contract does not hold.
"""
