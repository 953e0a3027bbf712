"""Just enough of the protobuf wire format to read a TensorFlow GraphDef without TensorFlow.

A message is a sequence of (field number, wire type, value). We decode only the fields a frozen
graph needs (see ``graphdef.py``); unknown fields are skipped by wire type, as protobuf itself
does. Every read is bounds-checked, so a truncated or foreign file raises ``ProtoError``.
"""

from __future__ import annotations

from collections.abc import Iterator

from mobilenet.errors import InputError

VARINT, FIXED64, LENGTH_DELIMITED, START_GROUP, END_GROUP, FIXED32 = 0, 1, 2, 3, 4, 5


class ProtoError(InputError):
    """Bytes that are not a well-formed protobuf message."""


def read_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ProtoError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtoError("varint longer than 10 bytes")


def iter_fields(data: bytes | memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value): an int for varint/fixed fields, a memoryview slice for
    length-delimited ones (strings, bytes, sub-messages, packed arrays)."""
    view = memoryview(data)
    pos, end = 0, len(view)
    while pos < end:
        key, pos = read_varint(view, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ProtoError("field number 0")
        if wire == VARINT:
            value, pos = read_varint(view, pos)
            yield number, wire, value
        elif wire == LENGTH_DELIMITED:
            length, pos = read_varint(view, pos)
            if pos + length > end:
                raise ProtoError(f"field {number} runs past the end of the message (truncated file?)")
            yield number, wire, view[pos : pos + length]
            pos += length
        elif wire in (FIXED64, FIXED32):
            size = 8 if wire == FIXED64 else 4
            if pos + size > end:
                raise ProtoError("truncated fixed-width field")
            yield number, wire, int.from_bytes(view[pos : pos + size], "little")
            pos += size
        else:
            raise ProtoError(f"unsupported wire type {wire} (groups are not used by GraphDef)")


def as_str(value: int | memoryview) -> str:
    if not isinstance(value, memoryview):
        raise ProtoError("expected a string field")
    return bytes(value).decode("utf-8", errors="replace")
