"""A real S3 API server for tests: moto in server mode on a loopback port.

moto speaks the S3 REST protocol over HTTP like MinIO or AWS, so boto3 in the node
(a subprocess) and in the CLI talks to it exactly as to a real store. The server
runs in this test process (moto's WSGI application under werkzeug, as moto's own
``ThreadedMotoServer`` runs it) and keeps its buckets in this process's memory, so
``stop`` and ``start`` again on the same port is an outage that ends with the data
intact, which is what a store coming back looks like.

``stop`` also cuts the connections already open: a werkzeug server that stops
listening keeps serving its keep-alive connections from their own threads, so a
client with a pooled connection (boto3 in the node) would not see the outage at all.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from bastion.openssh_target import free_port
from tests.peers.lane import require_integration

BUCKET = "bastion-recordings"
REGION = "us-east-1"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "moto-test-key",
    "AWS_SECRET_ACCESS_KEY": "moto-test-secret",  # a test server's dummy
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
"""The node and the CLI find these in their environment (boto3's standard chain)."""


class MotoS3:
    """A moto S3 server on 127.0.0.1:``port`` that can be stopped and started again."""

    def __init__(self) -> None:
        self.port = free_port()
        self._server: Any = None
        self._held: socket.socket | None = None

    @property
    def url(self) -> str:
        """The endpoint_url for boto3 and ``[recording.s3]``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """True between ``start`` and ``stop``."""
        return self._server is not None

    def start(self) -> None:
        """Serve on the same port as before (the buckets and objects are still there)."""
        require_integration("an S3 server (moto)")
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import WSGIRequestHandler, make_server

        connections: set[socket.socket] = set()
        lock = threading.Lock()

        class Handler(WSGIRequestHandler):
            """Remembers its connection so that ``stop`` can cut it."""

            def setup(self) -> None:
                super().setup()
                with lock:
                    connections.add(self.connection)

            def finish(self) -> None:
                with lock:
                    connections.discard(self.connection)
                super().finish()

            def log_request(self, *args: Any, **kwargs: Any) -> None:
                pass  # quiet, as ThreadedMotoServer(verbose=False)

        app = DomainDispatcherApplication(create_backend_app)
        held, self._held = self._held, None
        if held is not None:
            held.close()
        server = make_server("127.0.0.1", self.port, app, threaded=True, request_handler=Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True, name="moto-s3")
        thread.start()
        self._server = (server, thread, connections, lock)

    def stop(self) -> None:
        """Stop serving: the listening socket closes and every open connection is cut,
        so connections to the port are refused until ``start``."""
        running, self._server = self._server, None
        if running is None:
            return
        server, thread, connections, lock = running
        server.shutdown()  # serve_forever returns and closes the listening socket
        thread.join(timeout=10)
        with lock:
            open_now = list(connections)
        for conn in open_now:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its client
        # Keep the port bound (never listening) through the outage: connections are
        # refused, and no other test (another xdist worker's sshd or echo server) can
        # take the port meanwhile and leave the node's client waiting for an answer.
        held = socket.socket()
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.bind(("127.0.0.1", self.port))
        self._held = held

    def close(self) -> None:
        """Stop for good: the port is released too."""
        self.stop()
        held, self._held = self._held, None
        if held is not None:
            held.close()

    def client(self) -> Any:
        """A boto3 client on this server (for test set-up and tampering)."""
        import boto3

        return boto3.session.Session(
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        ).client("s3", endpoint_url=self.url, region_name=REGION)

    def storage_config(self, prefix: str = "rec", retry_max: float = 1.0) -> str:
        """The ``[recording]`` lines that store recordings here."""
        return (
            f'storage = "s3://{BUCKET}/{prefix}"\n'
            f's3 = {{ endpoint_url = "{self.url}", region = "{REGION}", retry_max = {retry_max} }}'
        )


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoS3]:
    """One moto S3 server with the bucket ``BUCKET``; credentials in the environment."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in CREDENTIALS.items():
            mp.setenv(name, value)
        server = MotoS3()
        server.start()
        try:
            server.client().create_bucket(Bucket=BUCKET)
            yield server
        finally:
            server.close()
