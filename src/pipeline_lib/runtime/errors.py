"""Errors a researcher can act on: each carries a message that names the file, key or value at fault."""


class PipelineError(Exception):
    """Base class: the CLI prints these as one clear line instead of a traceback."""


class ParamsError(PipelineError):
    """A params.yaml key is missing, malformed or inconsistent."""


class DataError(PipelineError):
    """Input data is missing, corrupt or does not match its checksum."""


class NonFiniteLossError(PipelineError):
    """Training produced a NaN or infinite loss; continuing would write a broken model."""


class ResourceError(PipelineError):
    """The device ran out of memory; the message names the params key to lower."""
