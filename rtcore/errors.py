"""The exceptions of rtcore: one root, each subclass also a matching built-in."""


class OuroError(Exception):
    """Root of every error rtcore raises on purpose."""


class CommandError(OuroError, ValueError):
    """A command that is malformed or not allowed now; the engine's state is unchanged."""


class ConfigError(OuroError, ValueError):
    """An engine configuration value that is out of range or of the wrong type."""


class ScriptError(OuroError, ValueError):
    """A performance script (``ouro offline``) that cannot be run as written."""
