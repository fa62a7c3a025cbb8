"""Scenario 3, the floors measured in the same run on the same servers: raw aio-pika publish with
confirms and consume (persistent messages on a durable quorum queue, as the exchange's own queues are),
and raw S3 PUT+GET of the same bytes to the same S3 API server."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any

import aio_pika
from aiobotocore.session import get_session

from lhcie.bench.client import pdf_of, percentiles
from lhcie.bench.harness import RAW_BUCKET, S3_ENV

# About the size of one of the exchange's events (a CloudEvents envelope with document facts).
EVENT_SIZE = 1024


async def amqp(url: str, *, count: int, publishers: int, size: int = EVENT_SIZE, timeout: float) -> dict[str, Any]:
    connection = await aio_pika.connect_robust(url)
    queue_name = f"bench.raw.{uuid.uuid4().hex[:8]}"
    sent: dict[str, float] = {}
    latencies: list[float] = []
    all_in = asyncio.Event()
    try:
        consume_channel = await connection.channel()
        await consume_channel.set_qos(prefetch_count=32)
        queue = await consume_channel.declare_queue(queue_name, durable=True, arguments={"x-queue-type": "quorum"})

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                started = sent.get(message.message_id or "")
                if started is not None:
                    latencies.append(time.monotonic() - started)
                if len(latencies) >= count:
                    all_in.set()

        tag = await queue.consume(on_message)
        body = os.urandom(size)
        ids = [uuid.uuid4().hex for _ in range(count)]
        publish_channels = [await connection.channel(publisher_confirms=True) for _ in range(publishers)]
        started = time.monotonic()

        async def publisher(channel: aio_pika.abc.AbstractChannel, mine: list[str]) -> None:
            for message_id in mine:
                sent[message_id] = time.monotonic()
                await channel.default_exchange.publish(
                    aio_pika.Message(body, message_id=message_id, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=queue_name,
                )

        await asyncio.gather(*(publisher(c, ids[i::publishers]) for i, c in enumerate(publish_channels)))
        published = time.monotonic()
        try:
            await asyncio.wait_for(all_in.wait(), timeout)
        except TimeoutError:
            pass
        elapsed = max(time.monotonic() - started, 1e-9)
        await queue.cancel(tag)
        await queue.delete(if_unused=False, if_empty=False)
    finally:
        await connection.close()
    return {
        "kind": "amqp publish-confirm + consume",
        "message_size": size,
        "publishers": publishers,
        "messages": count,
        "consumed": len(latencies),
        "msgs_per_s": round(len(latencies) / elapsed, 2),
        "publish_msgs_per_s": round(count / max(published - started, 1e-9), 2),
        "latency": percentiles(latencies),
    }


async def s3(endpoint: str, *, size: int, count: int, concurrency: int) -> dict[str, Any]:
    body = pdf_of(size)
    session = get_session()
    latencies: list[float] = []
    async with session.create_client(
        "s3",
        endpoint_url=endpoint,
        region_name=S3_ENV["AWS_DEFAULT_REGION"],
        aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
    ) as client:
        keys = [f"bench-raw/{uuid.uuid4().hex}" for _ in range(count)]

        async def worker(mine: list[str]) -> None:
            for key in mine:
                t0 = time.monotonic()
                await client.put_object(Bucket=RAW_BUCKET, Key=key, Body=body)
                response = await client.get_object(Bucket=RAW_BUCKET, Key=key)
                async with response["Body"] as stream:
                    got = await stream.read()
                if len(got) != size:
                    raise RuntimeError("S3 returned different bytes")
                latencies.append(time.monotonic() - t0)

        started = time.monotonic()
        await asyncio.gather(*(worker(keys[i::concurrency]) for i in range(concurrency)))
        elapsed = max(time.monotonic() - started, 1e-9)
        for key in keys:
            await client.delete_object(Bucket=RAW_BUCKET, Key=key)
    return {
        "kind": "s3 put+get",
        "size": size,
        "concurrency": concurrency,
        "operations": count,
        "ops_per_s": round(count / elapsed, 2),
        "latency": percentiles(latencies),
    }
