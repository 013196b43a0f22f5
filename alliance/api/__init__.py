"""REST API of the alliance app under /api/v1/."""
