"""Errors a user can act on. The stage runner prints them as one line (no traceback)."""


class PeftpipeError(Exception):
    """Base class: the message names the file, key or value and what would be valid."""


class ParamsError(PeftpipeError):
    """params.yaml (or a recipe) has an unknown key, a wrong type or a bad value."""


class DataError(PeftpipeError):
    """Input data is missing, malformed or inconsistent with the label set."""


class ModelError(PeftpipeError):
    """A model cannot be found, or does not fit the task."""


class ExportError(PeftpipeError):
    """The exported model does not reproduce the adapter model's predictions."""


class InputError(PeftpipeError):
    """Input given on the command line or stdin cannot be read."""
