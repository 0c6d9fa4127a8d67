"""Streaming reader of raw Criteo TSV files (plain or gzip), block by block.

A line holds 40 tab-separated fields: label (0 or 1, never empty), 13 integers, 26
categoricals in hex; an empty integer or categorical field is missing and reads as 0.
Malformed lines are counted and skipped (or raise `MalformedRowError` when strict),
each named by file and 1-based line number. A gzip file that ends before its
end-of-stream marker (truncated) raises `TruncatedFileError` when strict; otherwise
its complete lines are kept, the cut last line is dropped and the last block says so
in `truncated`. `parse_line_python` is the slow, obvious reference of the fast parser.
"""
import gzip
import zlib
import os
import re
from dataclasses import dataclass, field
from typing import Iterator, List

import numpy as np

from ..kernels import criteo_parse as kp

NUM_INT = kp.NUM_INT
NUM_CAT = kp.NUM_CAT
BLOCK_BYTES = 8 << 20
MAX_EXAMPLES = 10

_INT_RE = re.compile(rb"-?[0-9]+")
_HEX_RE = re.compile(rb"[0-9a-fA-F]+")


class MalformedRowError(ValueError):
    """A malformed row in strict mode: `path`, 1-based `line` and `reason`."""

    def __init__(self, path, line, reason):
        super().__init__(f"{path}:{line}: malformed row: {reason}")
        self.path, self.line, self.reason = str(path), int(line), reason

    def __reduce__(self):  # picklable: a worker process hands it back (parallel_days)
        return type(self), (self.path, self.line, self.reason)


class TruncatedFileError(ValueError):
    """A gzip raw file that ends early: `path`, complete `lines` read, `data_bytes`
    (uncompressed bytes of those lines), `file_bytes` (size of the file)."""

    def __init__(self, path, lines, data_bytes, file_bytes, cut_line):
        msg = (f"{path}: truncated gzip file: its {file_bytes:,} bytes end before the "
               f"end-of-stream marker, after {lines:,} complete lines ({data_bytes:,} "
               f"uncompressed bytes)")
        if cut_line:
            msg += f"; line {lines + 1:,} is cut short"
        super().__init__(msg)
        self.path, self.lines = str(path), int(lines)
        self.data_bytes, self.file_bytes = int(data_bytes), int(file_bytes)
        self.cut_line = cut_line

    def __reduce__(self):
        return type(self), (self.path, self.lines, self.data_bytes, self.file_bytes,
                            self.cut_line)


class EmptyRawFileError(ValueError):
    """A raw file with no valid row: empty, truncated before its first line, or
    entirely malformed (when `require_rows`)."""

    def __init__(self, path, message):
        super().__init__(message)
        self.path = str(path)

    def __reduce__(self):
        return type(self), (self.path, str(self))


class CorruptFileError(ValueError):
    """A gzip raw file whose compressed data is damaged (not merely cut short)."""

    def __init__(self, path, position, error):
        super().__init__(f"{path}: corrupt gzip data near compressed byte {position:,} "
                         f"({error}); the file is damaged: download or copy it again")
        self.path, self._args = str(path), (str(path), position, str(error))

    def __reduce__(self):
        return type(self), self._args


@dataclass
class MalformedRow:
    """Where and why a row was skipped."""
    path: str
    line: int
    reason: str

    def __str__(self):
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass
class TsvBlock:
    """The valid rows of one block and what was skipped in it.

    labels: (n,) int8; ints: (n, 13) int64 as written (negatives kept); cats: (n, 26)
    uint64, Fortran-ordered (columns contiguous); malformed: the first few skipped rows.
    """
    labels: np.ndarray
    ints: np.ndarray
    cats: np.ndarray
    n_malformed: int
    malformed: List[MalformedRow] = field(default_factory=list)
    bytes_done: int = 0
    bytes_total: int = 0
    truncated: str = ""  # on the last block of a truncated gzip file: what was read


def describe(code, bad_field, text):
    """Human reason of a malformed line from its status code, field and field text."""
    if code == kp.FIELD_COUNT:
        return f"{bad_field} tab-separated fields, expected {kp.NUM_FIELDS}"
    shown = repr(text[:40].decode("utf-8", "replace")) + ("..." if len(text) > 40 else "")
    if bad_field == 0:
        return f"field 1 (label) is {shown}, expected 0 or 1"
    if bad_field <= NUM_INT:
        name = f"field {bad_field + 1} (integer I{bad_field})"
        if code == kp.INT_RANGE:
            return f"{name} is {shown}, which does not fit in int64"
        return f"{name} is {shown}, expected an optional '-' followed by decimal digits"
    name = f"field {bad_field + 1} (categorical C{bad_field - NUM_INT})"
    if code == kp.HEX_TOO_LONG:
        return f"{name} is {shown}: {len(text)} hex digits, at most {kp.MAX_HEX_DIGITS} expected"
    return f"{name} is {shown}, expected hexadecimal digits"


def parse_line_python(line):
    """Slow reference: (status, bad_field, label, ints, cats) of one line (bytes, no '\\n')."""
    if line.endswith(b"\r"):
        line = line[:-1]
    fields = line.split(b"\t")
    if len(fields) != kp.NUM_FIELDS:
        return kp.FIELD_COUNT, len(fields), 0, (), ()
    if fields[0] not in (b"0", b"1"):
        return kp.BAD_LABEL, 0, 0, (), ()
    label = int(fields[0])
    ints = []
    for f in range(1, NUM_INT + 1):
        text = fields[f]
        if text and not _INT_RE.fullmatch(text):
            return kp.BAD_INT, f, 0, (), ()
        value = int(text or b"0")
        if not -2**63 <= value < 2**63:
            return kp.INT_RANGE, f, 0, (), ()
        ints.append(value)
    cats = []
    for f in range(NUM_INT + 1, kp.NUM_FIELDS):
        text = fields[f]
        if text and not _HEX_RE.fullmatch(text):
            return kp.BAD_HEX, f, 0, (), ()
        if len(text) > kp.MAX_HEX_DIGITS:
            return kp.HEX_TOO_LONG, f, 0, (), ()
        cats.append(int(text or b"0", 16))
    return kp.OK, -1, label, tuple(ints), tuple(cats)


def field_text(line, bad_field):
    """The text of field `bad_field` (0-based) of a line (bytes), for messages."""
    return line.rstrip(b"\r").split(b"\t")[bad_field]


def open_raw(path):
    """Binary file object of a raw file; gzip is recognised by its magic bytes."""
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def _read_block(f, size):
    """(up to `size` bytes of f, truncated): truncated when a gzip stream ends early.

    read1 calls the decompressor once each, so nothing decoded before the end is lost.
    """
    parts, n = [], 0
    try:
        while n < size:
            chunk = f.read1(size - n)
            if not chunk:
                break
            parts.append(chunk)
            n += len(chunk)
    except EOFError:
        return b"".join(parts), True
    return b"".join(parts), False


def iter_line_blocks(path, block_bytes=BLOCK_BYTES):
    """Yield (buf, starts, ends, bytes_done, bytes_total) of complete lines.

    buf: (nbytes,) uint8; starts/ends: (n,) int64 line bounds without '\\n'. A final
    line without '\\n' is kept; an empty last line of the file is dropped. A truncated
    gzip file yields its complete lines, drops the cut last line, then raises
    `TruncatedFileError`.
    """
    if block_bytes < 1:
        raise ValueError(f"block_bytes must be >= 1, got {block_bytes}")
    total = os.path.getsize(path)
    lines_done, bytes_done = 0, 0
    with open_raw(path) as f:
        carry = b""
        eof = truncated = False
        while not eof:
            try:
                chunk, truncated = _read_block(f, block_bytes)
            except (zlib.error, gzip.BadGzipFile) as e:
                raise CorruptFileError(path, _compressed_position(f, total), e) from None
            eof = truncated or not chunk
            data = carry + chunk
            if truncated:  # only lines ended by '\n' are complete
                cut = data.rfind(b"\n") + 1
            else:
                cut = len(data) if eof else data.rfind(b"\n") + 1
            if not eof and data[_line_start(data, cut):cut] in (b"\n", b"\r\n"):
                cut = _line_start(data, cut)  # maybe the empty last line: decide at EOF
            if cut == 0:
                carry = data
                continue
            carry = data[cut:]
            buf = np.frombuffer(data, dtype=np.uint8, count=cut)
            newlines = np.flatnonzero(buf == 10)
            starts = np.concatenate([[0], newlines + 1]).astype(np.int64)
            ends = np.concatenate([newlines, [cut]]).astype(np.int64)
            if starts[-1] == cut:  # nothing after the last '\n'
                starts, ends = starts[:-1], ends[:-1]
            if eof and not truncated and len(starts) and _is_empty(buf, starts[-1], ends[-1]):
                starts, ends = starts[:-1], ends[:-1]
            done = _compressed_position(f, total)
            lines_done, bytes_done = lines_done + len(starts), bytes_done + cut
            yield buf, starts, ends, (total if eof else done), total
        if truncated:
            raise TruncatedFileError(path, lines_done, bytes_done, total, len(carry) > 0)


def _line_start(data, cut):
    """Start of the line that ends at data[cut - 1] == '\n'."""
    return data.rfind(b"\n", 0, max(cut - 1, 0)) + 1


def _is_empty(buf, s, e):
    return e == s or (e == s + 1 and buf[s] == 13)


def _compressed_position(f, total):
    """Bytes of the file consumed so far (the compressed position for gzip)."""
    if isinstance(f, gzip.GzipFile):
        return min(f.fileobj.tell(), total)
    return min(f.tell(), total)


def read_criteo_tsv(path, block_bytes=BLOCK_BYTES, strict=False,
                    max_examples=MAX_EXAMPLES, require_rows=False) -> Iterator[TsvBlock]:
    """Yield the parsed valid rows of `path`, one `TsvBlock` per block of bytes.

    A truncated gzip file raises `TruncatedFileError` when strict, else ends with an
    empty block whose `truncated` says where the file ended. With `require_rows`, a
    file that gives no valid row raises `EmptyRawFileError` once read.
    """
    line_base, kept, n_bad, first_bad = 0, 0, 0, None
    blocks = iter_line_blocks(path, block_bytes)
    while True:
        try:
            buf, starts, ends, done, total = next(blocks)
        except StopIteration:
            break
        except TruncatedFileError as e:
            if strict:
                raise
            if require_rows and kept == 0:
                _refuse_no_rows(path, n_bad, first_bad, str(e))
            yield TsvBlock(np.zeros(0, np.int8), np.zeros((0, NUM_INT), np.int64),
                           np.zeros((0, NUM_CAT), np.uint64), 0, [], e.file_bytes,
                           e.file_bytes, str(e))
            return
        n = len(starts)
        labels = np.empty(n, dtype=np.int8)
        ints = np.zeros((n, NUM_INT), dtype=np.int64)
        cats_t = np.zeros((NUM_CAT, n), dtype=np.uint64)
        status = np.empty(n, dtype=np.int8)
        bad = np.empty(n, dtype=np.int32)
        kp.parse_criteo_lines(labels, ints, cats_t, status, bad, buf, starts, ends)
        bad_rows = np.flatnonzero(status != kp.OK)
        examples = []
        for k, i in enumerate(bad_rows[:max(max_examples, 1)]):
            line = buf[starts[i]:ends[i]].tobytes()
            text = b"" if status[i] == kp.FIELD_COUNT else field_text(line, bad[i])
            row = MalformedRow(str(path), line_base + int(i) + 1,
                               describe(int(status[i]), int(bad[i]), text))
            if strict:
                raise MalformedRowError(row.path, row.line, row.reason)
            first_bad = first_bad or row
            if k < max_examples:
                examples.append(row)
        line_base += n
        n_bad += len(bad_rows)
        kept += n - len(bad_rows)
        if len(bad_rows):
            keep = status == kp.OK
            labels, ints, cats_t = labels[keep], ints[keep], cats_t[:, keep]
        yield TsvBlock(labels, ints, cats_t.T, len(bad_rows), examples, done, total)
    if require_rows and kept == 0:
        _refuse_no_rows(path, n_bad, first_bad, "")


def _refuse_no_rows(path, n_bad, first_bad, truncated):
    """Raise `EmptyRawFileError`: `path` gave no valid row."""
    if n_bad:
        msg = (f"raw data file {path}: all {n_bad:,} rows are malformed, no row to keep; "
               f"the first: {first_bad}")
        if truncated:
            msg += f" (and {truncated})"
    elif truncated:
        msg = f"{truncated}: no complete row to keep"
    else:
        msg = f"raw data file {path} holds no rows (it is empty)"
    raise EmptyRawFileError(path, msg)
