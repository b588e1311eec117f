"""tfevents_decode -- an independent reader of TensorBoard event files, for tests.

Written from the format's description (TFRecord framing, TensorFlow's event.proto
and summary.proto field numbers), sharing no code with common/tfevents.c: the
CRC comes from python3-crc32c, the protobuf wire format is decoded by hand
(varints, fixed64, fixed32, length-delimited; no generated code), so a test
that reads tfps's files with it checks them against the format, not against
tfps's own idea of it.

    from tfevents_decode import read_events, TFEventsError
    events = read_events(path)   # [{wall_time, step, file_version, values: {tag: float}}, ...]

Record: u64 length LE | u32 masked crc32c(length bytes) | data | u32 masked crc32c(data),
mask(c) = ((c >> 15) | (c << 17)) + 0xa282ead8 mod 2^32.
Event: wall_time double 1, step int64 2, file_version string 3, summary Summary 5.
Summary: repeated Value value 1.  Value: tag string 1, simple_value float 2.

read_events raises TFEventsError on any CRC or format error, naming the byte
offset (a message about a CRC contains "CRC mismatch"). strict=True (the
default, for files tfps writes) also refuses what tfps never writes: unknown
fields, a field twice, both file_version and summary in one event, a Value
without tag or simple_value, a tag twice in one event, a first event that is
not file_version "brain.Event:2", a later one without a summary. strict=False
reads TensorFlow's own files: unknown fields skipped, Values without a
simple_value (images, histograms, tensors) left out, last scalar value wins.
"""

import struct

try:
    import crc32c as _crc32c_mod
except ImportError:  # the test skips; importing this module still works
    _crc32c_mod = None

FILE_VERSION = "brain.Event:2"

__all__ = ["TFEventsError", "read_events", "iter_records", "decode_event", "frame_record",
           "masked_crc", "have_crc32c", "FILE_VERSION"]


class TFEventsError(Exception):
    """A CRC or format error in an event file."""


def have_crc32c():
    return _crc32c_mod is not None


def _crc32c(data):
    if _crc32c_mod is None:
        raise ImportError("tfevents_decode needs python3-crc32c (apt-get install python3-crc32c)")
    return _crc32c_mod.crc32c(data) & 0xFFFFFFFF


def masked_crc(data):
    """The masked CRC-32C of data, as the record framing stores it."""
    c = _crc32c(data)
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def frame_record(payload):
    """payload framed as one record (for tests that build their own files)."""
    head = struct.pack("<Q", len(payload))
    return head + struct.pack("<I", masked_crc(head)) + payload + struct.pack("<I", masked_crc(payload))


def iter_records(data, name="<bytes>"):
    """Yields (offset of the record, payload bytes) for each record of data, checking both CRCs;
    errors start with name."""
    at, n = 0, 0
    while at < len(data):
        if len(data) - at < 12:
            raise TFEventsError("%s: record %d at offset %d: truncated header (%d bytes, need 12)"
                                % (name, n, at, len(data) - at))
        head = data[at:at + 8]
        (length,) = struct.unpack("<Q", head)
        (stored,) = struct.unpack("<I", data[at + 8:at + 12])
        got = masked_crc(head)
        if stored != got:
            raise TFEventsError("%s: record %d at offset %d: length CRC mismatch (stored 0x%08x, computed 0x%08x)"
                                % (name, n, at, stored, got))
        if length > len(data) - at - 16:
            raise TFEventsError("%s: record %d at offset %d: truncated (length %d + 4 CRC bytes, %d left)"
                                % (name, n, at, length, len(data) - at - 12))
        payload = data[at + 12:at + 12 + length]
        (stored,) = struct.unpack("<I", data[at + 12 + length:at + 16 + length])
        got = masked_crc(payload)
        if stored != got:
            raise TFEventsError("%s: record %d at offset %d: data CRC mismatch (stored 0x%08x, computed 0x%08x)"
                                % (name, n, at, stored, got))
        yield at, payload
        at += 16 + length
        n += 1


# ---- protobuf wire format, by hand -------------------------------------------------------------

VARINT, FIXED64, LEN, FIXED32 = 0, 1, 2, 5


def _varint(buf, i, where):
    result, shift = 0, 0
    for k in range(10):
        if i >= len(buf):
            raise TFEventsError("%s: varint cut short at byte %d" % (where, i))
        b = buf[i]
        i += 1
        if k == 9 and b > 1:
            raise TFEventsError("%s: varint longer than 64 bits at byte %d" % (where, i - 1))
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return result, i
    raise TFEventsError("%s: varint of more than 10 bytes at byte %d" % (where, i))


def _fields(buf, where):
    """Yields (field number, wire type, value): int for varints, bytes otherwise."""
    i = 0
    while i < len(buf):
        start = i
        key, i = _varint(buf, i, where)
        num, wt = key >> 3, key & 7
        if num == 0:
            raise TFEventsError("%s: field number 0 at byte %d" % (where, start))
        if wt == VARINT:
            v, i = _varint(buf, i, where)
        elif wt == FIXED64:
            if len(buf) - i < 8:
                raise TFEventsError("%s: fixed64 field %d cut short at byte %d" % (where, num, start))
            v, i = buf[i:i + 8], i + 8
        elif wt == FIXED32:
            if len(buf) - i < 4:
                raise TFEventsError("%s: fixed32 field %d cut short at byte %d" % (where, num, start))
            v, i = buf[i:i + 4], i + 4
        elif wt == LEN:
            n, i = _varint(buf, i, where)
            if n > len(buf) - i:
                raise TFEventsError("%s: field %d of %d bytes overruns the message (%d left) at byte %d"
                                    % (where, num, n, len(buf) - i, start))
            v, i = buf[i:i + n], i + n
        else:
            raise TFEventsError("%s: field %d has wire type %d (groups and 6/7 are not expected) at byte %d"
                                % (where, num, wt, start))
        yield num, wt, v


def _text(b, where):
    try:
        return bytes(b).decode("utf-8")
    except UnicodeDecodeError as e:
        raise TFEventsError("%s: string is not valid UTF-8 (%s)" % (where, e)) from None


def _expect(num, wt, want, where):
    if wt != want:
        raise TFEventsError("%s: field %d has wire type %d, expected %d" % (where, num, wt, want))


def _decode_value(buf, where, strict):
    tag, value, seen = None, None, set()
    for num, wt, v in _fields(buf, where):
        if strict and num in seen:
            raise TFEventsError("%s: field %d twice" % (where, num))
        seen.add(num)
        if num == 1:
            _expect(num, wt, LEN, where)
            tag = _text(v, where + " tag")
        elif num == 2:
            _expect(num, wt, FIXED32, where)
            (value,) = struct.unpack("<f", v)
        elif strict:
            raise TFEventsError("%s: unknown field %d (wire type %d)" % (where, num, wt))
    if strict and (tag is None or tag == ""):
        raise TFEventsError("%s: no tag" % where)
    if strict and value is None:
        raise TFEventsError("%s: tag %r has no simple_value" % (where, tag))
    return tag, value


def _decode_summary(buf, where, strict):
    values = {}
    k = 0
    for num, wt, v in _fields(buf, where):
        if num == 1:
            _expect(num, wt, LEN, where)
            tag, value = _decode_value(v, "%s value %d" % (where, k), strict)
            k += 1
            if value is None:
                continue
            if strict and tag in values:
                raise TFEventsError("%s: tag %r twice" % (where, tag))
            values[tag] = value
        elif strict:
            raise TFEventsError("%s: unknown field %d (wire type %d)" % (where, num, wt))
    return values


def decode_event(payload, where="event", strict=True):
    """One Event message -> {wall_time, step, file_version, values}."""
    ev = {"wall_time": 0.0, "step": 0, "file_version": None, "values": {}}
    seen = set()
    summary = False
    for num, wt, v in _fields(payload, where):
        if strict and num in seen:
            raise TFEventsError("%s: field %d twice" % (where, num))
        seen.add(num)
        if num == 1:
            _expect(num, wt, FIXED64, where)
            (ev["wall_time"],) = struct.unpack("<d", v)
        elif num == 2:
            _expect(num, wt, VARINT, where)
            ev["step"] = v - (1 << 64) if v >= (1 << 63) else v
        elif num == 3:
            _expect(num, wt, LEN, where)
            ev["file_version"] = _text(v, where + " file_version")
        elif num == 5:
            _expect(num, wt, LEN, where)
            summary = True
            ev["values"].update(_decode_summary(v, where + " summary", strict))
        elif strict:
            raise TFEventsError("%s: unknown field %d (wire type %d)" % (where, num, wt))
    if strict and ev["file_version"] is not None and summary:
        raise TFEventsError("%s: both file_version and summary (one oneof)" % where)
    ev["_summary"] = summary
    return ev


def read_events(path, strict=True):
    """Every event of the file at path, in order; raises TFEventsError on any CRC or format error."""
    with open(path, "rb") as f:
        data = f.read()
    events = []
    for k, (off, payload) in enumerate(iter_records(data, path)):
        where = "%s: record %d at offset %d" % (path, k, off)
        ev = decode_event(payload, where, strict)
        summary = ev.pop("_summary")
        if strict:
            if k == 0 and ev["file_version"] != FILE_VERSION:
                raise TFEventsError("%s: the first event's file_version is %r, expected %r"
                                    % (where, ev["file_version"], FILE_VERSION))
            if k > 0 and not summary:
                raise TFEventsError("%s: an event without a summary" % where)
            if not ev["wall_time"] > 0:
                raise TFEventsError("%s: wall_time %r" % (where, ev["wall_time"]))
        events.append(ev)
    if strict and not events:
        raise TFEventsError("%s: no records" % path)
    return events
