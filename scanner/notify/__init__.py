"""Notification domain: destination config and filters, message text, webhook signing, rate limits and
the retry schedule. Pure: no sockets here; `procs.notifier` does the I/O."""
