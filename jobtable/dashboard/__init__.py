"""The jobtable dashboard: an ASGI app to watch and steer jobs in a browser.

``jobtable dashboard`` serves it; ``create_app`` builds it for mounting in your own
Starlette or FastAPI application.
"""

from jobtable.dashboard.app import create_app

__all__ = ["create_app"]
