"""Errors that reach the user as one clear line.

Every failure caused by input (config, model file, frames, labels) raises a subclass of
`TrapcamError` whose message names the problem: which key, which file, what was expected.
The CLI prints `str(error)` on one line and exits non-zero; it never prints a traceback
for these.
"""


class TrapcamError(Exception):
    """Base class: the message is meant for the person running the trap."""

    exit_code = 2


class ConfigError(TrapcamError):
    """The configuration file is invalid (message names file, line, key path, value)."""


class ModelError(TrapcamError):
    """The model bundle or model file cannot be used (missing, checksum, labels, shape)."""


class SourceError(TrapcamError):
    """A frame source cannot be opened or has stopped delivering frames."""

    exit_code = 3


class StorageError(TrapcamError):
    """The database or crop storage is unusable (integrity check failed, not writable)."""

    exit_code = 4


class ExportError(TrapcamError):
    """A daily export or Camtrap DP package cannot be made (bad dates, unusable database, no site)."""


class MqttError(TrapcamError):
    """A message cannot be built or queued for MQTT (bad kind, QoS, topic part or payload)."""


class AcceleratorError(TrapcamError):
    """A configured accelerator (Edge TPU, TensorRT) is missing or cannot run the model.

    Never silently replaced by the CPU: the message says what was looked for and how to check it;
    only `classifier.allow_cpu_fallback: true` turns it into a degraded CPU run.
    """

    exit_code = 2


class ReportError(TrapcamError):
    """`trapcam report` cannot be made (bad dates or level, plotting library missing)."""
