"""The real `fg-image serve` on a free port of 127.0.0.1, started and stopped by tests."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from support.cli import FG_IMAGE, free_port


@dataclass
class Service:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_service(env: dict[str, str], log: Path, timeout: float = 60) -> Service:
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(FG_IMAGE), "serve", "--port", str(port)], env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    service = Service(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"fg-image serve exited with {proc.returncode}: {log.read_text()}")
        try:
            if requests.get(service.url + "/healthz", timeout=2).ok:
                return service
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    service.stop()
    raise AssertionError(f"fg-image serve did not answer within {timeout}s: {log.read_text()}")
