"""numba's compiles, announced: whether a compiled function is already in numba's on-disk cache, and one log line
before anything is compiled (what, and that it is cached for later runs). docs/startup.md, "First-run compiles".
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Optional

log = logging.getLogger("sgns")


def has_cached_code(dispatcher: Any, signature: Optional[tuple] = None) -> bool:
    """Whether `dispatcher` (a numba `njit(cache=True)` function) needs no compile: compiled in this process
    already, or found in numba's cache (for `signature` exactly when given, else any entry of its index that is
    current for the source file)."""
    if signature is None:
        if dispatcher.overloads:
            return True
        cache = getattr(dispatcher, "_cache", None)
        if cache is None or not hasattr(cache, "_cache_file"):
            return False
        try:
            return bool(cache._cache_file._load_index())  # {} when absent or stale (the source changed)
        except Exception:  # an unreadable index: numba will compile
            return False
    if any(tuple(sig) == tuple(signature) for sig in dispatcher.overloads):
        return True
    cres = dispatcher._cache.load_overload(signature, dispatcher.targetctx)
    if cres is None:
        return False
    dispatcher.add_overload(cres)  # what dispatcher.compile(signature) would do after finding it
    return True


def cache_location(dispatcher: Any) -> str:
    """The folder numba caches `dispatcher`'s compiled code in (NUMBA_CACHE_DIR, else __pycache__ by the source)."""
    cache = getattr(dispatcher, "_cache", None)
    return str(getattr(cache, "cache_path", "numba's cache"))


def announce_compile(what: str, dispatchers: Iterable[Any], seconds: str,
                     say: Optional[Callable[[str], None]] = None) -> None:
    """The one line said before a compile: what is compiled, about how long it takes and where it is cached."""
    first = next(iter(dispatchers))
    (say or log.info)(f"compiling {what} (once, about {seconds}; numba caches it in {cache_location(first)}, "
                      f"later runs load it)")
