"""Producing one record with raw bytes as header names, over Kafka's wire protocol (Produce v3,
record batch v2, plaintext, sent to the partition's leader).

confluent_kafka's producer only takes `str` header names and the Java client only writes UTF-8,
but the protocol carries any bytes: a librdkafka or Go producer can write a name that is not
UTF-8, and `confluent_kafka.Message.headers()` then raises when the consumer reads it. Tests need
such records in a real topic, so this writes the request by hand.
"""

from __future__ import annotations

import socket
import struct
import time

from confluent_kafka.admin import AdminClient

from tests.support.zigzag import varint as _varint

_CRC32C_TABLE: list[int] = []
for _n in range(256):
    _crc = _n
    for _ in range(8):
        _crc = (_crc >> 1) ^ 0x82F63B78 if _crc & 1 else _crc >> 1
    _CRC32C_TABLE.append(_crc)


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF



def _bytes(data: bytes | None) -> bytes:
    return _varint(-1) if data is None else _varint(len(data)) + data


def record_batch(key: bytes | None, value: bytes | None, headers: list[tuple[bytes, bytes | None]]) -> bytes:
    body = (b"\x00" + _varint(0) + _varint(0) + _bytes(key) + _bytes(value) + _varint(len(headers))
            + b"".join(_varint(len(name)) + name + _bytes(data) for name, data in headers))
    record = _varint(len(body)) + body
    now = int(time.time() * 1000)
    after_crc = (struct.pack(">hiqqqhi", 0, 0, now, now, -1, -1, -1) + struct.pack(">i", 1) + record)
    header = struct.pack(">qii", 0, 4 + 1 + 4 + len(after_crc), -1) + b"\x02"
    return header + struct.pack(">I", crc32c(after_crc)) + after_crc


def produce_raw(bootstrap: str, topic: str, partition: int, key: bytes | None, value: bytes | None,
                headers: list[tuple[bytes, bytes | None]]) -> None:
    """Produce one record with acks=all to the partition's leader."""
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    leader = metadata.brokers[metadata.topics[topic].partitions[partition].leader]
    host, port = leader.host, leader.port
    batch = record_batch(key, value, headers)
    client_id = b"raw-test"
    name = topic.encode()
    body = (struct.pack(">hhih", 0, 3, 1, len(client_id)) + client_id  # Produce v3, correlation id 1
            + struct.pack(">hhi", -1, -1, 10_000)  # no transactional id, acks=all, timeout
            + struct.pack(">ih", 1, len(name)) + name
            + struct.pack(">iii", 1, partition, len(batch)) + batch)
    error_code = _first_partition_error(_request(host, int(port), body))
    if error_code != 0:
        raise RuntimeError(f"raw produce to {topic}[{partition}] failed with Kafka error code {error_code}")


def _request(host: str, port: int, body: bytes) -> bytes:
    """Send one request, return its answer (without its size)."""
    with socket.create_connection((host, port), timeout=15) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", _read(sock, 4))[0]
        return _read(sock, size)


def _first_partition_error(answer: bytes) -> int:
    """The error code of a one-topic, one-partition answer (Produce v3, OffsetCommit v2)."""
    # correlation id, topics: 1, name, partitions: 1, index, error code, ...
    offset = 4 + 4
    (name_length,) = struct.unpack_from(">h", answer, offset)
    offset += 2 + name_length + 4
    _, error_code = struct.unpack_from(">ih", answer, offset)
    return int(error_code)


def _read(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        data += chunk
    return bytes(data)


def commit_raw(bootstrap: str, group: str, topic: str, partition: int, offset: int, metadata: bytes) -> None:
    """Commit `offset` for `group` with `metadata` as raw bytes (OffsetCommit v2, outside any group
    generation: the group must have no members). The protocol's metadata is any bytes to a broker;
    confluent_kafka only writes `str`, so a tool writing bytes that are not UTF-8 needs this."""
    host, _, port = bootstrap.partition(",")[0].rpartition(":")
    client_id, group_name, name = b"raw-test", group.encode(), topic.encode()
    body = (struct.pack(">hhih", 8, 2, 1, len(client_id)) + client_id  # OffsetCommit v2, correlation id 1
            + struct.pack(">h", len(group_name)) + group_name
            + struct.pack(">ih", -1, 0)  # no generation, no member id
            + struct.pack(">q", -1)  # the broker's retention
            + struct.pack(">ih", 1, len(name)) + name
            + struct.pack(">iiqh", 1, partition, offset, len(metadata)) + metadata)
    error_code = _first_partition_error(_request(host, int(port), body))
    if error_code != 0:
        raise RuntimeError(f"raw commit to {group} {topic}[{partition}] failed with Kafka error code {error_code}")
