"""Count the operations that make the host wait for the device (host syncs), on any device, CPU included.

On CUDA a host sync is any read of device data by the host: a copy to the host (``.cpu()``, ``.tolist()``,
``.numpy()``), a scalar read (``.item()``, ``bool(t)``, ``float(t)``: ``aten::_local_scalar_dense``) or an
operation whose output size depends on the data (``nonzero``, boolean-mask indexing, ``masked_select``,
``unique``). :class:`HostSyncCounter` counts these by name while it is active, also on the CPU where
they cost nothing, so a test can show how many a training step would make on a GPU. (On a GPU,
``torch.cuda.set_sync_debug_mode("warn")`` reports the real ones; ``benchmarks/gpu_speed.py`` uses both.)

Example:
    >>> with HostSyncCounter() as syncs:
    ...     total = torch.ones(3).sum().item()   # a scalar read
    ...     on_host = torch.ones(2).cpu()        # a copy to the host
    >>> syncs.total, dict(syncs.counts)
    (2, {'item': 1, 'cpu': 1})
"""

from __future__ import annotations

import collections

import torch
from torch.utils._python_dispatch import TorchDispatchMode

#: aten operations that read device data on the host or size their output by it
SYNC_OPS = {
    "_local_scalar_dense": "item",  # .item(), bool(t), float(t), int(t)
    "nonzero": "nonzero",
    "masked_select": "masked_select",
    "_unique2": "unique",
    "unique_dim": "unique",
    "unique_consecutive": "unique",
    "repeat_interleave": "repeat_interleave",
}
#: Tensor methods that copy to the host (on the CPU they return the tensor itself, no aten op runs)
COPY_METHODS = ("cpu", "tolist", "numpy")


class _SyncOps(TorchDispatchMode):
    def __init__(self, counts: collections.Counter) -> None:
        super().__init__()
        self.counts = counts

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in SYNC_OPS:
            self.counts[SYNC_OPS[name]] += 1
        elif name in ("index", "index_put", "index_put_") and any(
            isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in _indices(args)
        ):
            self.counts["boolean_index"] += 1
        return func(*args, **(kwargs or {}))


def _indices(args: tuple) -> list:
    return list(args[1]) if len(args) > 1 and isinstance(args[1], (list, tuple)) else []


class HostSyncCounter:
    """Context manager: ``counts`` (by kind) and ``total`` of the host syncs made inside it.

    The copies to the host are counted by patching ``torch.Tensor.cpu / tolist / numpy`` (a ``.numpy()``
    right after a ``.cpu()`` counts as the same copy when called on its result, so count it once).
    """

    def __init__(self) -> None:
        self.counts: collections.Counter = collections.Counter()
        self._mode = _SyncOps(self.counts)
        self._saved: dict = {}
        # the host copies made inside, held so that their ids are not reused by later tensors (an id of a
        # freed tensor can come back: a new .cpu() on it would then be missed, as it was once in CI)
        self._host_copies: dict[int, torch.Tensor] = {}

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def _wrap(self, name: str):
        original = self._saved[name]
        counter = self

        def method(tensor, *args, **kwargs):
            if id(tensor) not in counter._host_copies:
                counter.counts[name] += 1
            out = original(tensor.detach().clone() if name == "cpu" else tensor, *args, **kwargs)
            if name == "cpu":
                counter._host_copies[id(out)] = out
            return out

        return method

    def __enter__(self) -> HostSyncCounter:
        for name in COPY_METHODS:
            self._saved[name] = getattr(torch.Tensor, name)
            setattr(torch.Tensor, name, self._wrap(name))
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)
        for name, original in self._saved.items():
            setattr(torch.Tensor, name, original)
        self._saved.clear()
        self._host_copies.clear()


__all__ = ["HostSyncCounter", "SYNC_OPS", "COPY_METHODS"]
