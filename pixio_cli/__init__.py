"""pixio: a command-line toolkit for the Pixio vision encoder."""

__version__ = "0.1.0"
