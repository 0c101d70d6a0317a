"""Capture files in and out: stream pcap/pcapng (plain or gzip) as Batches; write pcapng."""

from badsum.capture.errors import CaptureError, CaptureOpenError
from badsum.capture.info import Interface, Section
from badsum.capture.reader import CaptureReader, open_capture
from badsum.scan.batch import Batch

__all__ = [
    "Batch",
    "CaptureError",
    "CaptureOpenError",
    "CaptureReader",
    "Interface",
    "Section",
    "open_capture",
]
