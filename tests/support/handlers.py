"""Load a Lambda handler module the way Lambda does (a top-level `app`), without name clashes.

One implementation, shared with the local stack: see infra/localstack/functions.py.
"""

from infra.localstack.functions import load_function

__all__ = ["load_function"]
