"""Fail fast when pretrained weights would come from a host that cannot be reached.

The Hugging Face Hub client retries a dead network for about a minute, logging each
try, before it falls back to its cache; torch.hub waits with no timeout at all. One
quick probe first lets skfeat use a cached copy at once, or say plainly that the
machine seems offline.
"""

from __future__ import annotations

import os
import ssl
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlparse

__all__ = [
    "PROBE_TIMEOUT",
    "WeightsSource",
    "hub_offline_mode",
    "hub_source",
    "torch_hub_source",
    "unreachable",
]

PROBE_TIMEOUT = 5.0  # seconds; a host that cannot answer a HEAD by then cannot serve weights
# A proxy that cannot get through answers with one of these instead of failing to connect.
_GATEWAY_ERRORS = (502, 503, 504)


def unreachable(url: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    """Why ``url``'s host cannot be reached now, or None when it answers.

    One HEAD request through the environment's proxies, without retries or redirects.
    Any HTTP answer counts as reachable (a redirect or a 404 too), except a proxy's
    gateway errors; so does a TLS failure, which the download's own client may handle
    differently.
    """
    outcome: list[str | None] = []

    def probe() -> None:
        request = urllib.request.Request(url, method="HEAD")
        opener = urllib.request.build_opener(_NoRedirect)  # proxies as in the environment
        try:
            with opener.open(request, timeout=timeout):
                outcome.append(None)
        except urllib.error.HTTPError as err:
            outcome.append(f"HTTP {err.code}" if err.code in _GATEWAY_ERRORS else None)
        except (OSError, ValueError) as err:  # URLError, refused, timed out, unknown host
            reason = getattr(err, "reason", err)
            if isinstance(reason, ssl.SSLError):
                outcome.append(None)
            else:
                outcome.append(f"{type(reason).__name__}: {reason}")

    # Name resolution ignores socket timeouts, so the wait is bounded here.
    thread = threading.Thread(target=probe, name="skfeat-probe", daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    if not outcome:
        return f"no answer within {timeout:g} s"
    return outcome[0]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer; following it would turn the HEAD into a GET of the file."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def hub_offline_mode() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) asks for no network.

    The Hub client reads the variable once, at import; it is read here at call time
    as well, so setting it later still keeps skfeat off the network.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return True
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.upper() in ("1", "ON", "YES", "TRUE")


@dataclass(frozen=True)
class WeightsSource:
    """Where a download would come from, and the local cache that may hold it already."""

    url: str  # the first file a download would fetch; its host is probed
    cached: str | None  # the cached copy, or None
    cache_dir: str
    hub: bool  # from the Hugging Face Hub, so HF_HUB_OFFLINE applies


def hub_source(repo_id: str, filenames: list[str], revision: str | None) -> WeightsSource:
    """A Hub repository's file, the first of ``filenames`` found in the local cache."""
    from huggingface_hub import constants, hf_hub_url, try_to_load_from_cache

    cached = None
    for filename in filenames:
        path = try_to_load_from_cache(repo_id, filename, revision=revision)
        if isinstance(path, str):  # None: not cached; a sentinel: cached as absent
            cached = path
            break
    url = hf_hub_url(repo_id, filenames[0], revision=revision)
    return WeightsSource(url, cached, str(constants.HF_HUB_CACHE), hub=True)


def torch_hub_source(url: str) -> WeightsSource:
    """A plain URL as torch.hub downloads it, into ``<torch hub dir>/checkpoints``."""
    import torch

    cache_dir = os.path.join(torch.hub.get_dir(), "checkpoints")
    path = os.path.join(cache_dir, os.path.basename(urlparse(url).path))
    return WeightsSource(url, path if os.path.isfile(path) else None, cache_dir, hub=False)
