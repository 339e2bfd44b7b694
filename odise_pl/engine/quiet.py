"""Framework messages that say nothing to an odise-pl user, filtered out of every run's output.

Each is named here with the reason it is noise for this project; everything else Lightning and
PyTorch say is kept:

* Lightning's "💡 Tip: ... litlogger" advertisement (printed for every Trainer);
* Lightning's "Found N module(s) in eval mode at the start of training": the frozen backbone parts
  are in eval mode by design (:mod:`odise_pl.models.frozen`);
* Lightning's ``LeafSpec`` deprecation warning, raised inside Lightning itself (not our code);
* Lightning's "The ``srun`` command is available on your system but is not used": printed on any
  machine with SLURM installed, also for runs that are meant to run outside SLURM;
* Lightning's "``Trainer(limit_val_batches=1.0)`` was configured so 100% ..." notice.
"""

from __future__ import annotations

import logging
import warnings

#: regular expressions of the filtered warnings (matched at the start of the message)
WARNINGS = (
    r"Found \d+ module\(s\) in eval mode at the start of training",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"The `srun` command is available on your system but is not used",
)
#: starts of the filtered log records
LOG_RECORDS = ("💡 Tip: For seamless cloud logging", "`Trainer(limit_")


class _DropRecords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith(LOG_RECORDS[0]) or (message.startswith(LOG_RECORDS[1]) and "was configured so 100%" in message))


_FILTER = _DropRecords()


def quiet_framework_noise() -> None:
    """Install the filters (idempotent): warnings by message, log records on Lightning's loggers and handlers."""
    for pattern in WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in (
        "lightning.pytorch",
        "lightning.fabric",
        "lightning.pytorch.utilities.rank_zero",
        "lightning.fabric.utilities.rank_zero",
        "lightning.pytorch.trainer.setup",
        "lightning.pytorch.trainer.connectors.logger_connector.logger_connector",
    ):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
