"""seqfraud: behavioral-sequence fraud models from raw event logs to real-time decisions."""

__version__ = "0.1.0"
