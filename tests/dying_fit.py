"""A ``odise-pl`` command in a new process that SIGKILLs itself right after a chosen checkpoint is on disk.

Killing from outside after polling ``last.ckpt`` raced with the later checkpoint writes on a loaded
machine (the child could finish first); a child that kills itself inside the checkpoint writer cannot.
"""

from __future__ import annotations

import torch


def dying_command(argv: list[str], condition: str) -> str:
    """Python source for ``python -c``: run ``odise-pl ARGV`` and SIGKILL the process right after the first
    checkpoint write for which ``condition`` (an expression of ``checkpoint`` and ``path``) holds."""
    return (
        f"import os, signal, sys, torch; torch.set_num_threads({torch.get_num_threads()})\n"
        "from odise_pl.engine.checkpoints import AtomicCheckpointIO\n"
        "save = AtomicCheckpointIO.save_checkpoint\n"
        "def save_then_die(self, checkpoint, path, storage_options=None):\n"
        "    save(self, checkpoint, path, storage_options)\n"
        f"    if {condition}:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "AtomicCheckpointIO.save_checkpoint = save_then_die\n"
        f"from odise_pl.cli import main; sys.exit(main({argv!r}))"
    )
