"""A minimal Django project serving django-oauth-toolkit: a real OAuth 2.0 peer for the tests."""
