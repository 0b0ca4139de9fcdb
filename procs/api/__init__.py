"""The gateway's HTTP/WebSocket API: one router per resource, dependencies in `deps`."""
