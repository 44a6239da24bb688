"""expwatch: an experiment babysitter for long ML evaluation runs."""

__version__ = "0.1.0"
