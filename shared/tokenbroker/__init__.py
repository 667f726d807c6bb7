"""tokenbroker: keeps third-party OAuth tokens alive on AWS and vends them on request."""

__version__ = "0.1.0"
USER_AGENT = f"tokenbroker/{__version__} (+https://github.com/tokenbroker/tokenbroker)"
