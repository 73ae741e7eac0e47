"""Typed errors of the engine. Every message says what was wrong and, where it helps, what to do."""


class LensError(Exception):
    """Base of every error the engine raises on purpose."""

    code = "lens_error"


class InputError(LensError, ValueError):
    """The text or chat given for analysis is unusable (empty, too long, malformed)."""

    code = "invalid_input"


class OptionError(LensError, ValueError):
    """An analysis or generation option is out of its range."""

    code = "invalid_option"


class CheckpointError(LensError):
    """A lens checkpoint cannot be read or does not fit its base model."""

    code = "incompatible_checkpoint"


class ModelLoadError(LensError):
    """A base, donor or demo model cannot be loaded."""

    code = "model_unloadable"


class UnknownLensError(LensError, KeyError):
    """A lens id that the registry does not hold."""

    code = "unknown_lens"

    def __str__(self):  # KeyError would repr() the message
        return self.args[0] if self.args else "unknown lens"


class RegistryError(LensError):
    """The lens registry file is malformed."""

    code = "bad_registry"
