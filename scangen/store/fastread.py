"""Fast path for the embedding column of files written by `scangen.store.writer`.

Arrow's Parquet reader decodes float16 (FIXED_LEN_BYTE_ARRAY(2)) one value at a time, about 15x
slower than np.load. For the exact layout our writer produces (a required FixedSizeList of required
float16/float32 values, uncompressed, BYTE_STREAM_SPLIT or PLAIN data pages v1, no dictionary) the
values can be moved straight from the page bytes into the output with numpy: for BYTE_STREAM_SPLIT
page of n values of width w the bytes are w streams of n bytes (byte k of every value in stream k).

Any other layout, or any surprise while walking the pages, returns False and the caller falls back to
pyarrow; the fast path never guesses. Repetition/definition levels are skipped: with a required
list of required elements no value is null and no list is empty (a page whose level count differs
from its value count is refused), and the Arrow schema fixes every list at D values (the value count
of each row group must equal rows x D).
"""

from __future__ import annotations

import mmap
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

_PLAIN, _BYTE_STREAM_SPLIT = 0, 9
_DATA_PAGE = 0


class _Unsupported(Exception):
    """The bytes do not have the layout the fast path handles."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _zigzag(buf: bytes, pos: int) -> tuple[int, int]:
    raw, pos = _varint(buf, pos)
    return (raw >> 1) ^ -(raw & 1), pos


def _skip(buf: bytes, pos: int, ctype: int) -> int:
    """Skip one Thrift compact value of type `ctype`."""
    if ctype in (1, 2):  # booleans live in the field header
        return pos
    if ctype == 3:
        return pos + 1
    if ctype in (4, 5, 6):
        return _varint(buf, pos)[1]
    if ctype == 7:
        return pos + 8
    if ctype == 8:
        size, pos = _varint(buf, pos)
        return pos + size
    if ctype in (9, 10):
        head = buf[pos]
        pos += 1
        size, elem = head >> 4, head & 0x0F
        if size == 15:
            size, pos = _varint(buf, pos)
        for _ in range(size):
            pos = pos + 1 if elem in (1, 2) else _skip(buf, pos, elem)
        return pos
    if ctype == 12:
        return _struct(buf, pos)[1]
    raise _Unsupported(f"thrift type {ctype}")


def _struct(buf: bytes, pos: int) -> tuple[dict[int, object], int]:
    """Parse a Thrift compact struct: integer fields and nested structs by field id, others skipped.

    Malformed bytes end in IndexError (read past the end) or _Unsupported; callers catch both.
    """
    fields: dict[int, object] = {}
    last = 0
    while True:
        head = buf[pos]
        pos += 1
        if head == 0:
            return fields, pos
        delta, ctype = head >> 4, head & 0x0F
        if delta:
            fid = last + delta
        else:
            fid, pos = _zigzag(buf, pos)
        last = fid
        if ctype in (4, 5, 6):
            fields[fid], pos = _zigzag(buf, pos)
        elif ctype == 12:
            fields[fid], pos = _struct(buf, pos)
        else:
            pos = _skip(buf, pos, ctype)


def _unsplit(streams: np.ndarray, dest: np.ndarray) -> None:
    """Interleave byte streams (width, n) into little-endian values `dest` (n, width) uint8.

    float16: one shift and one or over uint16 (contiguous, vectorised); wider values: one strided
    byte column at a time. Both are far faster than assigning the transposed (n, width) view.
    """
    if streams.shape[0] == 2:
        words = dest.reshape(-1).view(np.uint16)
        np.left_shift(streams[1], 8, out=words, dtype=np.uint16)
        np.bitwise_or(words, streams[0], out=words)
    else:
        for k in range(streams.shape[0]):
            dest[:, k] = streams[k]


def page_ranges(file: pq.ParquetFile, dim: int, itemsize: int) -> list[tuple[int, int]] | None:
    """(offset, length) of the embedding column chunk of every row group, or None if the layout is
    not exactly the one the fast path decodes."""
    meta, schema = file.metadata, file.schema
    names = [schema.column(i).path for i in range(len(schema))]
    if sys.byteorder != "little" or "embedding.list.element" not in names:
        return None
    index = names.index("embedding.list.element")
    col = schema.column(index)
    physical = {2: "FIXED_LEN_BYTE_ARRAY", 4: "FLOAT"}.get(itemsize)
    if col.physical_type != physical or col.max_definition_level != 1 or col.max_repetition_level != 1:
        return None
    if physical == "FIXED_LEN_BYTE_ARRAY" and col.length != 2:
        return None
    ranges = []
    for g in range(meta.num_row_groups):
        chunk = meta.row_group(g).column(index)
        if chunk.compression != "UNCOMPRESSED" or chunk.has_dictionary_page:
            return None
        if not set(chunk.encodings) <= {"RLE", "BYTE_STREAM_SPLIT", "PLAIN"}:
            return None
        if chunk.num_values != meta.row_group(g).num_rows * dim:
            return None
        ranges.append((chunk.data_page_offset, chunk.total_compressed_size))
    return ranges


def read_chunk(path: Path, offset: int, length: int, out: np.ndarray) -> bool:
    """Decode one row group's embedding values (bytes offset..offset+length) into `out` (rows, D).

    Returns False, leaving `out` partly written, when a page is not an uncompressed plain or
    byte-stream-split data page v1 whose size matches its value count.
    """
    width = out.dtype.itemsize
    flat = out.reshape(-1).view(np.uint8).reshape(-1, width)
    with open(path, "rb") as handle:  # map the file: page bytes are used in place, never copied
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        return _decode_pages(mapped, offset, length, flat, width)
    finally:
        try:
            mapped.close()
        except BufferError:  # a numpy view is still alive; the map is released with it
            pass


def _decode_pages(buf: mmap.mmap, start: int, length: int, flat: np.ndarray, width: int) -> bool:
    """Walk the data pages in buf[start:start+length], filling `flat` (values, width) uint8."""
    pos, done, total = start, 0, flat.shape[0]
    end = start + length
    try:
        while done < total:
            header, pos = _struct(buf, pos)
            page, size = header.get(5), header.get(3)
            if header.get(1) != _DATA_PAGE or not isinstance(page, dict) or size != header.get(2):
                return False
            n, encoding = page.get(1), page.get(2)
            if not isinstance(size, int) or not isinstance(n, int) or size < 0 or n < 0:
                return False
            body = pos
            for _ in range(2):  # repetition then definition levels, each prefixed by its byte length
                body += 4 + int.from_bytes(buf[body : body + 4], "little")
            if body + n * width != pos + size or done + n > total or pos + size > end:
                return False
            values = np.frombuffer(buf, dtype=np.uint8, count=n * width, offset=body)
            if encoding == _BYTE_STREAM_SPLIT:
                _unsplit(values.reshape(width, n), flat[done : done + n])
            elif encoding == _PLAIN:
                flat[done : done + n] = values.reshape(n, width)
            else:
                return False
            done += n
            pos += size
    except (_Unsupported, IndexError, ValueError, TypeError):
        return False
    return pos == end
