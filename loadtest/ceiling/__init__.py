"""The bare minimum the service is measured against (issue 13): see app.py."""
