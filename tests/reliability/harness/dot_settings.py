"""django-oauth-toolkit peer settings for the reliability suite: one server, two rotation behaviours.

The peer of tests/peers always rotates refresh tokens. Grants with the scope ``write`` do not
(their refresh answer reuses the refresh token it was sent), so one server process stands in for a
provider that rotates and one that does not. Everything else is the peer's own settings.
"""

from dot_project.settings import *  # noqa: F403 - the peer's settings, one switch changed
from dot_project.settings import OAUTH2_PROVIDER

OAUTH2_PROVIDER = {
    **OAUTH2_PROVIDER,
    "OAUTH2_VALIDATOR_CLASS": "tests.reliability.harness.dot_validator.ScopeRotationValidator",
}
