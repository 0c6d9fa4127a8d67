"""TensorBoard event files: CRC-32C against RFC 3720's test vectors, the record framing and
Event encoding read back by our reader, and by TensorBoard's own when it is installed."""
import glob
import os
import struct

import pytest

from npdlrm.tensorboard import (EventFileWriter, TensorBoardReporter, crc32c, encode_event,
                                frame, masked_crc32c, read_events)


def test_crc32c_check_values():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC catalogue's check value
    # RFC 3720, B.4
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    assert crc32c(bytes(range(31, -1, -1))) == 0x113FDB5C


def test_masked_crc_is_rotated_plus_constant():
    crc = crc32c(b"abc")
    assert masked_crc32c(b"abc") == ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF)
                                     + 0xA282EAD8) & 0xFFFFFFFF


def test_event_encoding_bytes():
    # wall_time=1.5 (field 1, double), step=300 (field 2, varint 0xac 0x02), one scalar
    data = encode_event(1.5, 300, scalars=[("a", 0.25)])
    value = b"\x0a\x01a" + b"\x15" + struct.pack("<f", 0.25)
    summary = b"\x0a" + bytes([len(value)]) + value
    assert data == (b"\x09" + struct.pack("<d", 1.5) + b"\x10\xac\x02"
                    + b"\x2a" + bytes([len(summary)]) + summary)
    record = frame(data)
    assert record[:8] == struct.pack("<Q", len(data))
    assert record[8:12] == struct.pack("<I", masked_crc32c(record[:8]))
    assert record[12:-4] == data and record[-4:] == struct.pack("<I", masked_crc32c(data))


def test_written_file_reads_back(tmp_path):
    w = EventFileWriter(str(tmp_path / "run"))
    w.add_scalar("Train/Loss", 0.693, 1, wall_time=10.0)
    w.add_scalar("Test/Acc", 0.75, 2**40, wall_time=11.0)
    w.close()
    (path,) = glob.glob(str(tmp_path / "run" / "events.out.tfevents.*"))
    events = read_events(path)
    assert events[0]["file_version"] == "brain.Event:2" and events[0]["scalars"] == {}
    assert [(e["wall_time"], e["step"], e["scalars"]) for e in events[1:]] == [
        (10.0, 1, {"Train/Loss": pytest.approx(0.693, rel=1e-7)}),
        (11.0, 2**40, {"Test/Acc": 0.75})]


def test_a_corrupt_record_is_named(tmp_path):
    w = EventFileWriter(str(tmp_path))
    w.add_scalar("x", 1.0, 1)
    w.close()
    data = bytearray(open(w.path, "rb").read())
    data[-6] ^= 1
    open(w.path, "wb").write(bytes(data))
    with pytest.raises(ValueError, match="bad data CRC"):
        read_events(w.path)
    open(w.path, "wb").write(bytes(data[:-3]))
    with pytest.raises(ValueError, match="truncated"):
        read_events(w.path)


def test_reporter_writes_the_reference_tags(tmp_path):
    r = TensorBoardReporter(str(tmp_path))
    r.train({"loss": 0.5, "step": 3})
    r.evaluate({"accuracy": 0.7, "step": 3})
    r.evaluate({"recall": .1, "precision": .2, "f1": .3, "ap": .4, "auc": .6,
                "accuracy": .7, "step": 6})
    r.end(None)
    events = read_events(r.writer.path)[1:]
    tags = [(e["step"], *e["scalars"]) for e in events]
    assert tags == [(3, "Train/Loss"), (3, "Test/Acc")] + [
        (6, f"mlperf-metrics-test/{t}") for t in
        ("recall", "precision", "f1", "ap", "roc_auc", "accuracy")]
    assert events[-2]["scalars"]["mlperf-metrics-test/roc_auc"] == pytest.approx(0.6)


def test_tensorboard_itself_reads_the_file(tmp_path):
    loader = pytest.importorskip(
        "tensorboard.backend.event_processing.event_file_loader",
        reason="tensorboard is not installed (our own reader above checks the format)")
    w = EventFileWriter(str(tmp_path))
    w.add_scalar("Train/Loss", 0.25, 7, wall_time=3.0)
    w.close()
    events = list(loader.EventFileLoader(w.path).Load())
    assert events[0].file_version == "brain.Event:2"
    value = events[1].summary.value[0]
    assert (events[1].step, value.tag) == (7, "Train/Loss")
    assert value.simple_value == 0.25 or value.tensor.float_val[0] == 0.25
    assert os.path.basename(w.path).startswith("events.out.tfevents.")
