"""The project's own error types: each message says what was wrong, where, and what to do."""


class OdiseError(Exception):
    """Base class of every error odise-pl raises on bad input."""


class ConfigError(OdiseError, ValueError):
    """A YAML experiment file or a command-line override is wrong (names the file, key or line)."""


class DatasetError(OdiseError, ValueError):
    """A dataset on disk is missing or malformed (names the path and the expected layout)."""


class VocabularyError(OdiseError, ValueError):
    """A vocabulary string or file is malformed (names the entry or line)."""


class WeightsError(OdiseError, FileNotFoundError):
    """Pretrained weights named in the config (``model.clip.pretrained``, ``model.backbone.pretrained``)
    cannot be found or read (names the path and the layout expected)."""


class CheckpointError(OdiseError, ValueError):
    """A checkpoint cannot be used with this configuration."""


class NumericalError(OdiseError, ArithmeticError):
    """Training produced a non-finite loss (names the step and the loss terms)."""
