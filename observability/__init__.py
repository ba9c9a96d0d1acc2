"""Logs, request ids and metrics, shared by the API and the repositories."""
