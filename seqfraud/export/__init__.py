"""The serving artifact: its contract (:mod:`~seqfraud.export.artifact`, :mod:`~seqfraud.export.signing`),
which scoring reads, and the export job that writes it (:mod:`~seqfraud.export.exporter`), which needs
Lightning and scoring and so is imported by nothing below the commands.
"""
