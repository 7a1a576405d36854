# Load the Celery app with Django, so tasks queued from the web process use its configuration.
from backend.celery import app as celery_app

__all__ = ("celery_app",)
