"""arq's job and result records as JSON: nothing read from Redis is ever unpickled.

arq stores every job (``arq:job:{id}``) and result (``arq:result:{id}``) with pickle unless told
otherwise, so anyone able to write one key would run code in the API and in the worker. Every
producer and reader (the API, the worker, the CLI, the benchmark) gets its arq client, job handle
and worker settings from here, so the encoding is chosen in one place.

A failed job's result is an exception object in arq; it is stored as
``{"error_type": ..., "error_message": ...}`` (strings), and never turned back into an exception.
A record that is not JSON, or not an object, makes arq raise ``DeserializationError``, which the
readers report as a corrupt record.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

from arq.connections import ArqRedis
from arq.jobs import Job
from redis.asyncio import ConnectionPool

from app.constants import QUEUE_NAME

ERROR_TYPE = "error_type"
ERROR_MESSAGE = "error_message"


def _encode_value(value: object) -> object:
    """What json cannot encode by itself: exceptions (as type + message), datetimes, sets."""
    if isinstance(value, BaseException):
        return {ERROR_TYPE: type(value).__name__, ERROR_MESSAGE: str(value)}
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    raise TypeError(f"{type(value).__name__} cannot be stored in a job record")


def encode_record(record: dict[str, Any]) -> bytes:
    """A job or result record as compact UTF-8 JSON (arq's ``job_serializer``)."""
    return json.dumps(record, default=_encode_value, separators=(",", ":")).encode()


def decode_record(raw: bytes) -> dict[str, Any]:
    """A job or result record from JSON (arq's ``job_deserializer``); anything else is refused.

    Raises ValueError for bytes that are not a JSON object (a pickle, a stray string): arq turns
    it into ``DeserializationError``.
    """
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError(f"a job record is a JSON object, not {type(value).__name__}")
    return value


def error_text(result: object) -> str:
    """A failed job's reason, ``Type: message``, from the stored result."""
    if isinstance(result, dict) and isinstance(result.get(ERROR_TYPE), str):
        return f"{result[ERROR_TYPE]}: {result.get(ERROR_MESSAGE, '')}"
    return str(result)  # arq's own fallback, e.g. "unable to serialize result"


#: The keyword arguments that give an ArqRedis, a Worker or create_pool the JSON codec.
CODEC: dict[str, Any] = {"job_serializer": encode_record, "job_deserializer": decode_record}


def arq_client(pool: ConnectionPool) -> ArqRedis:
    """An arq client over ``pool`` that writes and reads job records as JSON."""
    return ArqRedis(pool, default_queue_name=QUEUE_NAME, **CODEC)


def arq_client_from_url(url: str, **pool_options: Any) -> ArqRedis:
    """An arq client for ``url`` (JSON); close it with ``aclose(close_connection_pool=True)``."""
    return arq_client(ConnectionPool.from_url(url, **pool_options))


def job_handle(redis: ArqRedis, job_id: str) -> Job:
    """arq's view of one job, decoding its records as JSON whatever ``redis`` was built with."""
    return Job(job_id, redis, _queue_name=QUEUE_NAME, _deserializer=decode_record)
