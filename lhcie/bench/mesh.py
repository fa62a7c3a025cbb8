"""Scenario 4, the incumbent peer: NHS England's MESH sandbox (file store, full auth) on loopback, driven
by the official ``mesh-client``. The same documents go from mailbox X26ABC1 to X26ABC2, where they are
listed, downloaded and acknowledged; a document counts once acknowledged. Each cell also gives the
sandbox's CPU-ms per document (its one process, from ``/proc``) and its client's (the bench process over
the cell: the MESH client's threads, and the bench's idle audit tail), beside the exchange's."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lhcie.bench.client import pdf_of, percentiles
from lhcie.bench.cpu import cpu_seconds
from lhcie.bench.harness import free_port, limit_memory

SENDER, RECIPIENT, PASSWORD, SHARED_KEY = "X26ABC1", "X26ABC2", "password", b"BackBone"
WORKFLOW = "TEST_WORKFLOW"  # the sandbox's canned workflow from X26ABC1 to X26ABC2


class MeshSandbox:
    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        port = free_port()
        store = self.work_dir / "mesh-store"
        store.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "STORE_MODE": "file",
            "AUTH_MODE": "full",
            "SHARED_KEY": SHARED_KEY.decode(),
            "FILE_STORE_DIR": str(store),
        }
        log = open(self.work_dir / "logs" / "mesh-sandbox.log", "ab")  # noqa: SIM115
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "mesh_sandbox.api:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=limit_memory,
        )
        log.close()
        self.url = f"http://127.0.0.1:{port}"
        from mesh_client import MeshClient

        deadline = time.monotonic() + 60
        while True:
            try:
                with MeshClient(self.url, SENDER, PASSWORD, shared_key=SHARED_KEY, max_retries=0) as client:
                    client.handshake()
                return
            except Exception:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the MESH sandbox did not start") from None
                time.sleep(0.2)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def client(self, mailbox: str) -> Any:
        from mesh_client import MeshClient

        return MeshClient(self.url, mailbox, PASSWORD, shared_key=SHARED_KEY)

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)


def _transfer(sandbox: MeshSandbox, count: int, senders: int, send: Any, receive: Any, deadline: float) -> None:
    with (
        ThreadPoolExecutor(senders) as send_pool,
        ThreadPoolExecutor(senders) as receive_pool,
        sandbox.client(RECIPIENT) as lister,
    ):
        sending = [send_pool.submit(send, i) for i in range(count)]
        taken: set[str] = set()
        receiving = []
        while len(taken) < count and time.monotonic() < deadline:
            fresh = [m for m in lister.list_messages(max_results=500) if m not in taken]
            for m in fresh:
                taken.add(m)
                receiving.append(receive_pool.submit(receive, m))
            if not fresh:
                time.sleep(0.01)
        for future in (*sending, *receiving):
            future.result()


def _run_transfer(sandbox: MeshSandbox, *, size: int, count: int, senders: int, timeout: float) -> dict[str, Any]:
    body = pdf_of(size)
    sent_at: dict[str, float] = {}
    acked_at: dict[str, float] = {}
    lock = threading.Lock()
    local = threading.local()
    opened: list[Any] = []

    def client_for(mailbox: str) -> Any:
        # One client per thread and mailbox: a requests session is not shared between threads.
        clients = local.__dict__.setdefault("clients", {})
        if mailbox not in clients:
            clients[mailbox] = sandbox.client(mailbox)
            with lock:
                opened.append(clients[mailbox])
        return clients[mailbox]

    def send(i: int) -> None:
        t0 = time.monotonic()
        message_id = client_for(SENDER).send_message(
            RECIPIENT, body, workflow_id=WORKFLOW, filename=f"bench-{i}.pdf", local_id=f"bench-{i}"
        )
        with lock:
            sent_at[message_id] = t0

    def receive(message_id: str) -> None:
        client = client_for(RECIPIENT)
        with client.retrieve_message(message_id) as message:
            got = message.read()
            if len(got) != size:
                raise RuntimeError("MESH returned different bytes")
            message.acknowledge()
        with lock:
            acked_at[message_id] = time.monotonic()

    started = time.monotonic()
    deadline = started + timeout
    server0, client0 = cpu_seconds(sandbox.pid) if sandbox.pid else None, cpu_seconds(os.getpid())
    try:
        _transfer(sandbox, count, senders, send, receive, deadline)
    finally:
        for client in opened:
            client.close()
    server1, client1 = cpu_seconds(sandbox.pid) if sandbox.pid else None, cpu_seconds(os.getpid())
    elapsed = max((max(acked_at.values()) if acked_at else time.monotonic()) - started, 1e-9)
    done = max(len(acked_at), 1)
    cpu_ms = {
        "sandbox": round((server1 - server0) * 1000 / done, 2) if server0 is not None and server1 is not None else None,
        "client": round((client1 - client0) * 1000 / done, 2) if client0 is not None and client1 is not None else None,
    }
    return {
        "size": size,
        "senders": senders,
        "documents": count,
        "acknowledged": len(acked_at),
        "seconds": round(elapsed, 3),
        "docs_per_s": round(len(acked_at) / elapsed, 2),
        "end_to_end": percentiles([acked_at[m] - sent_at[m] for m in acked_at if m in sent_at]),
        "cpu_ms_per_doc": cpu_ms,
    }


async def run(work_dir: Path, *, cells: list[tuple[int, int]], count: int, timeout: float) -> dict[str, Any]:
    sandbox = MeshSandbox(work_dir)
    await asyncio.to_thread(sandbox.start)
    try:
        results = []
        for size, senders in cells:
            results.append(
                await asyncio.to_thread(
                    _run_transfer, sandbox, size=size, count=max(count, senders), senders=senders, timeout=timeout
                )
            )
        return {"available": True, "store_mode": "file", "auth_mode": "full", "tls": False, "cells": results}
    finally:
        await asyncio.to_thread(sandbox.stop)
