"""What a host thread needs before it calls a model compiled with CUDA graphs.

torch.compile's CUDA-graph trees (modes ``reduce-overhead`` and ``max-autotune``) keep their tree
managers in a ``threading.local`` that is filled only on the thread that first imported them (and
in autograd's threads). Until PyTorch fixed it (pytorch/pytorch#123177, in 2.13), any other thread
that replays a compiled graph fails in ``cudagraph_trees.get_obj`` with a bare ``AssertionError``.
A worker calls compiled models from more than one thread: single requests on the actor's thread,
load scenarios (generation under load included) on lane threads made per trial. So the second
kind of trial in a worker failed, whichever came first.

``prepare()`` gives the calling thread its own tree managers, as PyTorch 2.13 does for a new thread;
it does nothing where the thread has them or torch is not imported for CUDA graphs.
"""

from __future__ import annotations

import threading
from collections import defaultdict

KEYS = ("tree_manager_containers", "tree_manager_locks")


def prepare() -> None:
    """Make torch.compile's CUDA-graph trees usable on the calling thread (idempotent, cheap)."""
    import torch
    from torch._inductor import cudagraph_trees as trees

    local = trees.local
    if hasattr(local, KEYS[0]) or torch._C._is_key_in_tls(KEYS[0]):
        return
    local.tree_manager_containers = {}
    local.tree_manager_locks = defaultdict(threading.Lock)
    for key in KEYS:  # autograd's threads copy these from this thread, as from the importing one
        torch._C._stash_obj_in_tls(key, getattr(local, key))
