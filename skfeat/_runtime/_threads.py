"""One OpenMP thread for each decoding thread, leaving the model's threads alone.

A decoding thread resizes with torch, and torch gives every thread that calls it an
OpenMP team as large as the process's intra-op setting (one per core). With ``n_jobs``
decoding threads beside the model's own team, a 2-core machine ran six busy threads,
and their spinning cost about a third of the decode throughput (a decode-bound
transform: 7 core-ms per image with one OpenMP thread per decoding thread, 9.6 with
torch's default). The images are already spread over ``n_jobs`` threads, so each of them
needs no team of its own.

``omp_set_num_threads`` (through threadpoolctl, which scikit-learn already depends on)
changes the calling thread's setting only; ``torch.set_num_threads`` would also change
the default of every thread started later, the caller's included.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["limit_to_one_thread"]


@functools.cache
def _openmp() -> Any:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(user_api="openmp")


def limit_to_one_thread() -> None:
    """Give the calling thread one OpenMP thread for torch's operators.

    Meant as a :class:`~concurrent.futures.ThreadPoolExecutor` ``initializer``: the
    limit lasts as long as the thread, and no other thread's setting changes.

    Examples
    --------
    >>> import threading, torch
    >>> from skfeat._runtime._threads import limit_to_one_thread
    >>> def count():
    ...     limit_to_one_thread()
    ...     seen.append(torch.get_num_threads())
    >>> seen = []
    >>> worker = threading.Thread(target=count)
    >>> worker.start(); worker.join()
    >>> seen
    [1]
    """
    import torch

    # torch sets a thread's OpenMP count on its first call in that thread, which would
    # undo the limit: make that call happen first.
    torch.get_num_threads()
    _openmp().limit(limits=1)
