"""Institutions, membership applications, people and roles, and the audit trail."""
