"""The jobtable dashboard: an ASGI app to watch and steer jobs in a browser.

``jobtable dashboard`` serves it; ``create_app`` builds it for mounting in your own
Starlette or FastAPI application.
"""

from jobtable._extras import require_extra

require_extra("dashboard", "jobtable.dashboard")
from jobtable.dashboard.app import create_app  # noqa: E402

__all__ = ["create_app"]
