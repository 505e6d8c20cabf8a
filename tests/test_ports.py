"""Published-port allocation: every service of a stack gets its own free port."""

from __future__ import annotations

import socket

import pytest

from harness.stack.spec import PortInUse, allocate_ports


def test_auto_ports_are_distinct_and_free():
    # Sequential bind-to-0 probes can hand out one port twice (seen in CI: engine A and B on
    # the same port); allocation holds every socket until all ports are chosen.
    for _ in range(2000):
        ports = allocate_ports("127.0.0.1", {"vllm_port": 0, "vllm_b_port": 0, "master_metrics_port": 0})
        assert len(set(ports.values())) == 3
        assert all(p > 0 for p in ports.values())


def test_auto_port_never_takes_the_fixed_one():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        fixed = probe.getsockname()[1]
    ports = allocate_ports("127.0.0.1", {"vllm_b_port": 0, "vllm_port": fixed, "master_metrics_port": 0})
    assert ports["vllm_port"] == fixed
    assert fixed not in (ports["vllm_b_port"], ports["master_metrics_port"])


def test_busy_fixed_port_names_the_field():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(PortInUse, match=rf"^stack.master_metrics_port: 127.0.0.1:{port} is already in use"):
            allocate_ports("127.0.0.1", {"vllm_port": 0, "master_metrics_port": port})
