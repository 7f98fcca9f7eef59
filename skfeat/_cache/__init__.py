"""The activation cache: the store, its keys, and the cached transform.

- :mod:`~skfeat._cache._store`: :class:`ActivationCache`, the handle on a store.
- :mod:`~skfeat._cache._memory`, :mod:`~skfeat._cache._disk`: where entries live, behind
  the one interface of :mod:`~skfeat._cache._backend`.
- :mod:`~skfeat._cache._entry`: the entry format (encode, read, checksum).
- :mod:`~skfeat._cache._keys`: what an image is (content key) and what computed its
  features (namespace).
- :mod:`~skfeat._cache._cached`: the engine behind the cache, one backbone pass per
  new image.

Only the store is imported here, so ``ActivationCache`` is cheap to import (no torch).
"""

from __future__ import annotations

from skfeat._cache._store import ActivationCache, resolve_cache

__all__ = ["ActivationCache", "resolve_cache"]
