"""The alliance portal's Django project: settings, URLs, the Celery app, WSGI/ASGI."""

from portal.celery import app as celery_app

__all__ = ["celery_app"]
