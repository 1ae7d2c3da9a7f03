"""Avro's and Kafka's zigzag varint, for tests that write bytes by hand (hostile records, raw
Kafka batches): the one encoder they share."""

from __future__ import annotations


def varint(value: int) -> bytes:
    value = (value << 1) ^ (value >> 63)  # zigzag: small negatives stay short
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
