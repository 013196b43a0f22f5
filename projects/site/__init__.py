"""What runs at a member's site: its identity and keys, the task handler, its heartbeats.

Nothing here opens the portal database or imports the coordinator's code (an import contract
holds it): a site worker knows the portal only by its public key, and the portal knows the site
only by its registered public key and what it signs.
"""
