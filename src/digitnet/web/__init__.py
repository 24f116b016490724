"""The draw-a-digit web page: a Flask app (app.py) served by Gunicorn (server.py), the network's
explanations (explain.py), the page (static/)."""

from digitnet.web.app import MAX_BODY, MAX_SIDE, create_app
from digitnet.web.server import Server, check_address

__all__ = ["create_app", "Server", "check_address", "MAX_BODY", "MAX_SIDE"]
