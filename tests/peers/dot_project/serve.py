"""Start the django-oauth-toolkit peer: migrate, seed one user and one application, serve.

Run as ``python -m dot_project.serve`` from tests/peers with the DOT_* environment variables of
settings.py plus DOT_USERNAME, DOT_EMAIL, DOT_PASSWORD, DOT_CLIENT_ID, DOT_CLIENT_SECRET. Binds 127.0.0.1
on an ephemeral port and prints ``listening <port>`` once requests are accepted.
"""

import os
import sys
from wsgiref.simple_server import WSGIRequestHandler, make_server

import django
from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.wsgi import get_wsgi_application


class _QuietHandler(WSGIRequestHandler):
    """Log request lines to stderr like wsgiref does, minus the query string."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        sys.stderr.write(f"{self.command} {self.path.split('?', 1)[0]} {code}\n")


def seed() -> None:
    """Create the user and the confidential password-grant application of the fixture."""
    user_model = get_user_model()
    user_model.objects.create_user(
        username=os.environ["DOT_USERNAME"], email=os.environ["DOT_EMAIL"], password=os.environ["DOT_PASSWORD"]
    )
    # DOT 3.x hashes client_secret on save; the fixture keeps the plain secret for the client.
    apps.get_model("oauth2_provider", "Application").objects.create(
        name="tokenbroker-peer",
        client_id=os.environ["DOT_CLIENT_ID"],
        client_secret=os.environ["DOT_CLIENT_SECRET"],
        client_type="confidential",
        authorization_grant_type="password",
    )


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dot_project.settings")
    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    seed()
    server = make_server("127.0.0.1", 0, get_wsgi_application(), handler_class=_QuietHandler)
    print(f"listening {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
