"""The local inference service: wire format (``protocol``), reference client (``client``) and
the HTTP server (``server``) that runs the engine's flow for remote callers."""
