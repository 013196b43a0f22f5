from django.http import HttpRequest

from alliance.permissions import membership_of


def membership(request: HttpRequest) -> dict:
    """The signed-in person's membership, for the navigation bar."""
    return {"my_membership": membership_of(getattr(request, "user", None))}
