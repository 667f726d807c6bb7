"""Load Lambda handler modules the way Lambda does: ``app.py`` imported as a top-level module.

Every function directory has its own ``app.py``, so each is imported under a unique module name
(two handlers named ``app`` must never shadow each other in one process). Tests use
``load_function("vend")``; the local stack uses ``load_handler`` with a template's CodeUri/Handler.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

FUNCTIONS_DIR = Path(__file__).resolve().parents[2] / "functions"

LambdaHandler = Callable[[dict[str, Any], Any], Any]


def load_module(path: Path, module_name: str) -> ModuleType:
    """Import ``path`` afresh as ``module_name`` (replacing an earlier import of that name)."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def load_function(name: str, *, functions_dir: Path | None = None) -> ModuleType:
    """Import functions/<name>/app.py afresh as module ``tokenbroker_function_<name>``."""
    path = (functions_dir or FUNCTIONS_DIR) / name / "app.py"
    return load_module(path, f"tokenbroker_function_{name}")


def load_handler(code_dir: Path, handler: str, *, unique_name: str) -> LambdaHandler:
    """The callable a Lambda ``Handler`` setting (``app.lambda_handler``) names inside ``code_dir``.

    ``unique_name`` (for example the function's logical id) keeps separate functions that share a
    code directory in separate module instances, as separate Lambda functions would be.
    """
    module_path, _, attribute = handler.rpartition(".")
    if not module_path or not attribute:
        raise ImportError(f"handler {handler!r} must look like module.function")
    path = code_dir.joinpath(*module_path.split(".")).with_suffix(".py")
    safe = re.sub(r"\W", "_", unique_name)
    module = load_module(path, f"tokenbroker_lambda_{safe}_{module_path.replace('.', '_')}")
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ImportError(f"{path} has no callable {attribute!r}")
    return function  # type: ignore[no-any-return]
