"""The HTTP API: the postbacks.v1 services over the Connect protocol, publishable keys' limits, and the web pixel."""
