"""The client's version, in a module of its own: the package imports the client, which reads it."""

__version__ = "0.1.0"
