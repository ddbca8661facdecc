"""A real S3 API server for tests: moto in server mode on a loopback port.

moto speaks the S3 REST protocol over HTTP like MinIO or AWS, so boto3 in the node
(a subprocess) and in the CLI talks to it exactly as to a real store. The server
runs in this test process (``ThreadedMotoServer``) and keeps its buckets in this
process's memory, so ``stop`` and ``start`` again on the same port is an outage
that ends with the data intact, which is what a store coming back looks like.
"""

from __future__ import annotations

import os
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
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        server.start()
        self._server = server

    def stop(self) -> None:
        """Stop serving: connections to the port are refused until ``start``."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()

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
            server.stop()
