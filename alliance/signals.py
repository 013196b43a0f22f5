"""Signals the alliance sends so that other apps can follow its changes without being imported.

``alliance`` never imports ``projects``; when an institution's standing changes, apps that keep
state derived from it (a problem's stage, for instance) receive this signal inside the same
transaction, and their own audit events land in it too.
"""

from django.dispatch import Signal

# Sent with ``actor`` and ``institution`` (already saved with its new status) and ``previous``.
institution_status_changed = Signal()
