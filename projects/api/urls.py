"""The projects app's API routes; ``portal.api_urls`` mounts them under ``/api/v1/``."""

urlpatterns: list = []
