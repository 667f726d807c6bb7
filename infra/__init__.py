"""Stand-ins for AWS and the providers on a developer machine (local stack, provider sandboxes).

Never imported by ``functions/`` or ``shared/``.
"""
