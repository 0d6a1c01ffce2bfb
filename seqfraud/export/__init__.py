"""Export a trained run to a serving artifact (:func:`export_run`) and read artifacts back.

``export_run`` is imported lazily: it needs Lightning to read the checkpoint, and the serving path
imports this package for :mod:`seqfraud.export.artifact` and must not pull Lightning in.
"""

from seqfraud.export.artifact import FORMATS, ArtifactError, open_artifact

__all__ = ["FORMATS", "ArtifactError", "ExportError", "export_run", "open_artifact"]


def __getattr__(name: str):
    if name in ("export_run", "ExportError"):
        from seqfraud.export import exporter

        return getattr(exporter, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
