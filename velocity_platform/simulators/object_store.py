"""An S3-compatible store on loopback for the tests and benchmarks of a lake in a bucket.

moto's S3 server (`moto_server`, a development dependency) speaks the wire protocol of AWS S3 and
MinIO, conditional puts included (a second `If-None-Match: *` create is refused with 412), which
is what delta-rs's commits rely on. It runs in its own process: delta-rs holds the GIL through some
calls, which would stall a server thread of the same interpreter. It checks no signature, so any
key pair reaches it; the tests still set one, as a deployment does.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from types import TracebackType

import httpx

from velocity_platform.simulators.serve import free_port

# What a deployment would export for this store (the keys are not checked by moto).
KEYS = {"AWS_ACCESS_KEY_ID": "velocity-test-key", "AWS_SECRET_ACCESS_KEY": "velocity-test-secret", "AWS_REGION": "eu-west-2"}


class S3Server:
    """`with S3Server(log) as s3:` a moto S3 server on a free loopback port; `s3.new_lake()` a fresh bucket."""

    def __init__(self, log: Path, ready_timeout_s: float = 30.0) -> None:
        self.log, self.ready_timeout_s = log, ready_timeout_s
        self.url = f"http://127.0.0.1:{free_port()}"
        self._process: subprocess.Popen | None = None

    def __enter__(self) -> S3Server:
        moto = Path(sys.executable).parent / "moto_server"
        if not moto.exists():
            raise RuntimeError(f"no {moto}: moto[server] is a development dependency (make install)")
        port = self.url.rsplit(":", 1)[1]
        with self.log.open("wb") as out:
            self._process = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", port], stdout=out, stderr=subprocess.STDOUT)
        try:
            self._wait_until_it_answers()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_until_it_answers(self) -> None:
        assert self._process is not None
        for _ in range(int(self.ready_timeout_s / 0.1)):  # bounded
            if self._process.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self._process.returncode}: {self.log.read_text()[-2000:]}")
            try:
                httpx.get(f"{self.url}/moto-api/", timeout=0.1)
                return
            except httpx.TransportError:
                try:
                    self._process.wait(timeout=0.1)  # returns at once if it died
                except subprocess.TimeoutExpired:
                    pass
        raise RuntimeError(f"moto_server did not answer on {self.url} within {self.ready_timeout_s:.0f} s")

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=30)
            self._process = None

    @property
    def environment(self) -> dict[str, str]:
        """The variables a deployment sets to reach this store."""
        return {**KEYS, "AWS_ENDPOINT_URL": self.url}

    def new_lake(self, prefix: str = "warehouse") -> str:
        """A fresh bucket (in the keys' region) and the lake URI inside it."""
        bucket = f"lake-{uuid.uuid4().hex[:12]}"
        region = KEYS["AWS_REGION"]
        body = f'<CreateBucketConfiguration><LocationConstraint>{region}</LocationConstraint></CreateBucketConfiguration>'
        answer = httpx.put(f"{self.url}/{bucket}", content=body, timeout=10)
        answer.raise_for_status()
        return f"s3://{bucket}/{prefix}"
