"""Errors of the model layer.

ModelError
 └── ModelUnavailable   weights or an extra are missing: no retry helps; the message holds
                        the exact command that fixes it. Raised at start-up, never mid-call.
"""


class ModelError(Exception):
    """A model could not be loaded or run."""


class ModelUnavailable(ModelError):
    """Weights or an optional extra are missing; ``str(err)`` says how to install them."""
