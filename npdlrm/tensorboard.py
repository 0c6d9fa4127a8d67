"""TensorBoard event files (`--tensor-board-filename DIR`), written in pure Python.

An event file is a sequence of records: length (uint64, little-endian), the masked
CRC-32C of those 8 bytes (uint32), the data, the masked CRC-32C of the data (uint32).
Each record holds one `Event` protocol buffer (tensorflow/core/util/event.proto):
wall_time = 1 (double), step = 2 (int64), file_version = 3 (string), summary = 5;
`Summary` holds repeated `Value` = 1, each tag = 1 (string), simple_value = 2 (float).
The first event of a file carries file_version "brain.Event:2". Only scalars are written.
`read_events` reads such files back (checking both CRCs), for tests and tools.
"""
import os
import socket
import struct
import time

from .trainer import Reporter

FILE_VERSION = "brain.Event:2"
_MASK_DELTA = 0xA282EAD8


def _crc32c_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1  # Castagnoli, reflected
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data):
    """CRC-32C (Castagnoli, RFC 3720) of bytes; crc32c(b"123456789") == 0xE3069283."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data):
    """The record framing's CRC: rotated right by 15 bits plus a constant."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def _varint(n):
    n &= (1 << 64) - 1  # negative int64 as two's complement
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _field_bytes(number, payload):
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_event(wall_time, step=0, file_version=None, scalars=()):
    """One Event message; scalars: [(tag, value)] as a Summary of simple values."""
    out = _varint(1 << 3 | 1) + struct.pack("<d", wall_time)
    if step:
        out += _varint(2 << 3) + _varint(int(step))
    if file_version is not None:
        out += _field_bytes(3, file_version.encode())
    if scalars:
        summary = b"".join(
            _field_bytes(1, _field_bytes(1, tag.encode()) + _varint(2 << 3 | 5)
                         + struct.pack("<f", float(value)))
            for tag, value in scalars)
        out += _field_bytes(5, summary)
    return out


def frame(data):
    """A record of the event file: length, its masked CRC, data, the data's masked CRC."""
    header = struct.pack("<Q", len(data))
    return (header + struct.pack("<I", masked_crc32c(header)) + data
            + struct.pack("<I", masked_crc32c(data)))


class EventFileWriter:
    """Writes scalars into a new event file in `logdir` (created), as TensorBoard reads
    them: events.out.tfevents.<seconds>.<host>."""

    def __init__(self, logdir):
        os.makedirs(logdir, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}"
        self.path = os.path.join(logdir, name)
        self.file = open(self.path, "wb")
        self.file.write(frame(encode_event(time.time(), file_version=FILE_VERSION)))
        self.file.flush()

    def add_scalar(self, tag, value, step, wall_time=None):
        """`tag` (e.g. "Train/Loss") = value at `step`; flushed at once."""
        event = encode_event(time.time() if wall_time is None else wall_time, step,
                             scalars=[(tag, value)])
        self.file.write(frame(event))
        self.file.flush()

    def close(self):
        self.file.close()


def _read_varint(buf, i):
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _fields(buf):
    """[(field number, wire type, value)] of a protocol-buffer message."""
    out, i = [], 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        elif wire == 2:
            n, i = _read_varint(buf, i)
            value, i = buf[i:i + n], i + n
        else:
            raise ValueError(f"unsupported protocol-buffer wire type {wire}")
        out.append((number, wire, value))
    return out


def decode_event(data):
    """{"wall_time", "step", "file_version" (or None), "scalars": {tag: value}}."""
    event = {"wall_time": None, "step": 0, "file_version": None, "scalars": {}}
    for number, wire, value in _fields(data):
        if number == 1 and wire == 1:
            event["wall_time"] = struct.unpack("<d", value)[0]
        elif number == 2 and wire == 0:
            event["step"] = value - (1 << 64) if value >= 1 << 63 else value
        elif number == 3 and wire == 2:
            event["file_version"] = bytes(value).decode()
        elif number == 5 and wire == 2:
            for n, w, v in _fields(value):
                if n == 1 and w == 2:
                    f = {num: val for num, _, val in _fields(v)}
                    if 2 in f:
                        event["scalars"][bytes(f[1]).decode()] = struct.unpack("<f", f[2])[0]
    return event


def read_events(path):
    """Every event of an event file, each CRC checked (ValueError names a bad record)."""
    with open(path, "rb") as f:
        buf = f.read()
    events, i = [], 0
    while i < len(buf):
        if len(buf) - i < 12:
            raise ValueError(f"{path}: truncated record header at byte {i}")
        header = buf[i:i + 8]
        (n,) = struct.unpack("<Q", header)
        (crc,) = struct.unpack("<I", buf[i + 8:i + 12])
        if crc != masked_crc32c(header):
            raise ValueError(f"{path}: bad length CRC at byte {i}")
        data = buf[i + 12:i + 12 + n]
        if len(data) != n or len(buf) < i + 16 + n:
            raise ValueError(f"{path}: truncated record at byte {i}")
        (crc,) = struct.unpack("<I", buf[i + 12 + n:i + 16 + n])
        if crc != masked_crc32c(data):
            raise ValueError(f"{path}: bad data CRC in the record at byte {i}")
        events.append(decode_event(data))
        i += 16 + n
    return events


MLPERF_TAGS = (("recall", "recall"), ("precision", "precision"), ("f1", "f1"), ("ap", "ap"),
               ("roc_auc", "auc"), ("accuracy", "accuracy"))


class TensorBoardReporter(Reporter):
    """The reference's scalars: Train/Loss at each printed line; at each evaluation
    Test/Acc, or mlperf-metrics-test/<recall|precision|f1|ap|roc_auc|accuracy> when the
    record holds them; the x axis is the batches trained (the reference's log_iter)."""

    def __init__(self, logdir):
        self.writer = EventFileWriter(logdir)

    def train(self, record):
        self.writer.add_scalar("Train/Loss", record["loss"], record["step"])

    def evaluate(self, record):
        if "ap" in record:
            for tag, key in MLPERF_TAGS:
                self.writer.add_scalar("mlperf-metrics-test/" + tag, record[key],
                                       record["step"])
        else:
            self.writer.add_scalar("Test/Acc", record["accuracy"], record["step"])

    def end(self, trainer):
        self.writer.close()
