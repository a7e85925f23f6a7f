"""The one way fastdiff builds its optional numba loops: once per process, with a clean fallback.

Example:
    >>> state = {}
    >>> compiled_once(state, "fn", lambda: None, "an example loop") is None
    True
"""
from __future__ import annotations

import os
import threading
import warnings
from typing import Any, Callable, Optional

__all__ = ["DISABLE_ENV", "compiled_once"]

#: set this environment variable to 1 to keep every numba loop off (numpy / torch do the same work)
DISABLE_ENV = "FASTDIFF_NO_NUMBA"

_lock = threading.Lock()


def compiled_once(state: dict, key: str, build: Callable[[], Any], what: str) -> Optional[Any]:
    """``state[key]``, set on the first call to ``build()`` (which compiles, or loads from numba's cache, and
    runs the loops once); None when numba is disabled (``FASTDIFF_NO_NUMBA=1``), missing (``ImportError``) or
    fails to compile (a ``RuntimeWarning`` naming ``what``; the caller's fallback computes the same)."""
    if key in state:
        return state[key]
    with _lock:
        if key not in state:
            fn = None
            if os.environ.get(DISABLE_ENV, "") not in ("1", "true", "yes"):
                try:
                    fn = build()
                except ImportError:
                    fn = None
                except Exception as err:  # a numba that cannot compile here
                    warnings.warn(f"fastdiff: {what} failed to compile ({err}); using the fallback", RuntimeWarning)
                    fn = None
            state[key] = fn
    return state[key]
