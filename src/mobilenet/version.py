"""The project's version: its one owner (``pyproject.toml`` reads it from here). A leaf module, so
that the writers that stamp it into exported files need not import the package's face, which
reaches up to everything."""

__version__ = "0.1.0"
