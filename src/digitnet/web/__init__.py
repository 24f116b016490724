"""The draw-a-digit web page: a Flask app (app.py), the network's explanations (explain.py), the page (static/)."""

from digitnet.web.app import MAX_BODY, MAX_SIDE, Server, check_address, create_app

__all__ = ["create_app", "Server", "check_address", "MAX_BODY", "MAX_SIDE"]
