"""Entry point of the learner's model process (worker.py): python -m
services.learner.model_process FD LOG_LEVEL LOG_FORMAT, FD being its end of a socket pair."""

from __future__ import annotations

import socket
import sys

from services.learner.channel import widen
from services.learner.process_worker import worker_main

if __name__ == "__main__":
    sock = socket.socket(fileno=int(sys.argv[1]))
    widen(sock)
    worker_main(sock, sys.argv[2], sys.argv[3])
