"""Compressed output files: the codecs an extraction may write with, and the file objects that count what is
stored while a writer writes.

JSON Lines and CSV are compressed as a whole stream (``gzip`` from the standard library; ``zstd`` from
``compression.zstd`` on Python 3.14+, else the ``backports.zstd`` package of the ``[zstd]`` extra). Parquet
compresses inside the file, page by page (``snappy``, ``zstd``, ``gzip`` or ``none``), so its files are
never wrapped.
"""

from __future__ import annotations

import gzip
import io
from typing import IO, Any

from deyel_provider.exceptions import DeyelConfigError

#: Stream codecs of the text formats, and the extension each makes the output name end with.
TEXT_CODECS: dict[str, str] = {"gzip": ".gz", "zstd": ".zst"}
#: Codecs Parquet applies inside the file (pyarrow's names); ``snappy`` is the default.
PARQUET_CODECS: tuple[str, ...] = ("snappy", "zstd", "gzip", "none")
#: Every compression extension an output name may end with; a plain format must end with none of them.
COMPRESSED_EXTENSIONS: tuple[str, ...] = (".gz", ".gzip", ".zst", ".zstd", ".bz2", ".xz", ".lz4", ".snappy")

#: zlib's own default: most of level 9's ratio for a fraction of its time.
GZIP_LEVEL = 6
#: zstd's own default level.
ZSTD_LEVEL = 3


def zstd_module() -> Any:
    """The zstd module: the standard library's on 3.14+, else ``backports.zstd`` (the ``[zstd]`` extra)."""
    try:
        from compression import zstd  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        try:
            from backports import zstd  # type: ignore[import-not-found,no-redef,unused-ignore]
        except ImportError:
            raise DeyelConfigError(
                "compression='zstd' needs the zstd codec: install the provider's [zstd] extra "
                "(pip install 'airflow-provider-deyel[zstd]'), or use compression='gzip'"
            ) from None
    return zstd


class CountingWriter(io.RawIOBase):
    """Passes bytes on to ``raw`` and counts them: the size of the file as stored, compression included."""

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__()
        self.raw = raw
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        written = len(data) if not isinstance(data, memoryview) else data.nbytes
        self.raw.write(data)
        self.count += written
        return written

    def tell(self) -> int:
        return self.count

    def flush(self) -> None:
        if not self.raw.closed:
            self.raw.flush()

    def close(self) -> None:
        if not self.closed:
            try:
                self.raw.close()
            finally:
                super().close()


class EncodedFile:
    """One output file being written: the format writes into ``stream`` (through the codec, if any), and
    ``size`` is what the file holds so far (a codec's buffered bytes come with :meth:`close`)."""

    def __init__(self, raw: IO[bytes], compression: str | None = None) -> None:
        self._counter = CountingWriter(raw)
        self.compression = compression
        self.stream: Any
        if compression == "gzip":
            # mtime=0 and no file name in the header: a rerun over the same data writes the same bytes.
            self.stream = gzip.GzipFile(
                filename="", fileobj=self._counter, mode="wb", compresslevel=GZIP_LEVEL, mtime=0
            )
        elif compression == "zstd":
            self.stream = zstd_module().ZstdFile(self._counter, mode="w", level=ZSTD_LEVEL)
        elif compression is None:
            self.stream = self._counter
        else:
            raise DeyelConfigError(
                f"compression must be one of {list(TEXT_CODECS)} or None, got {compression!r}"
            )

    @property
    def size(self) -> int:
        return self._counter.count

    def close(self) -> None:
        """Write what the codec still holds, then close the file (again: nothing)."""
        try:
            if self.stream is not self._counter and not self.stream.closed:
                self.stream.close()
        finally:
            self._counter.close()


def decoded(raw: IO[bytes], compression: str | None) -> Any:
    """``raw`` read through the codec it was written with: what the writer wrote."""
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if compression == "zstd":
        return zstd_module().ZstdFile(raw, mode="r")
    return raw
