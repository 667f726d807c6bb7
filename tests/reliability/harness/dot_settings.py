"""django-oauth-toolkit peer settings with refresh-token rotation switchable (DOT_ROTATE=0/1).

The peer of tests/peers always rotates; the reliability suite also needs a provider that does not
(its refresh answer reuses the refresh token it was sent). Everything else is the peer's own.
"""

import os

from dot_project.settings import *  # noqa: F403 - the peer's settings, one switch changed
from dot_project.settings import OAUTH2_PROVIDER

OAUTH2_PROVIDER = {**OAUTH2_PROVIDER, "ROTATE_REFRESH_TOKEN": os.environ.get("DOT_ROTATE", "1") == "1"}
