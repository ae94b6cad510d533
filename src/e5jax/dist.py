"""Several processes under ``jax.distributed``: start-up, which process writes, results back on every host.

``e5jax run`` and ``e5jax sweep`` take ``--coordinator HOST:PORT --num-processes N --process-id I`` (or the
``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID`` environment variables, or ``--distributed``
alone on a cluster JAX detects). Every process runs the same command: ``jax.devices()`` then spans every process's
devices, the rows are sharded over all of them (``engine.shard_seeds``), every program runs on all processes, and
results come back to every host with ``to_host`` (an all-gather where an array is not addressable here). Process 0
alone writes the outputs (``e5jax.io`` is switched off on the others); the Orbax checkpoints are saved by every
process into the one directory (Orbax's multi-host save: the output directory must be on a filesystem every
process sees).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import time

import jax
import numpy as np

from e5jax import io
from e5jax.errors import UsageError

ENV = {"coordinator": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES", "process_id": "JAX_PROCESS_ID"}


def _setting(args, name: str, cast):
    value = getattr(args, name, None)
    if value is None and os.environ.get(ENV[name]):
        try:
            value = cast(os.environ[ENV[name]])
        except ValueError:
            raise UsageError(f"${ENV[name]}={os.environ[ENV[name]]!r} is not a valid {name.replace('_', ' ')}") from None
    return value


def initialize(args) -> bool:
    """Start ``jax.distributed`` when the arguments or the environment ask for it (before any JAX computation);
    False when this is a one-process run. Bad settings raise ``UsageError`` (one line, exit 2, nothing written)."""
    coordinator = _setting(args, "coordinator", str)
    n = _setting(args, "num_processes", int)
    pid = _setting(args, "process_id", int)
    if coordinator is None and n is None and pid is None and not getattr(args, "distributed", False):
        return False
    if n is not None and n < 1:
        raise UsageError(f"--num-processes must be at least 1, got {n}")
    if pid is not None and n is not None and not 0 <= pid < n:
        raise UsageError(f"--process-id must be in 0..{n - 1} for {n} processes, got {pid}")
    if coordinator is not None and (":" not in coordinator or not coordinator.rsplit(":", 1)[1].isdigit()):
        raise UsageError(f"--coordinator {coordinator!r}: give HOST:PORT")
    timeout = getattr(args, "coordinator_timeout", 120.0)
    if not timeout > 0:
        raise UsageError(f"--coordinator-timeout must be > 0 seconds, got {timeout}")
    if coordinator is not None and n is not None and pid is not None and n > 1:
        rendezvous(coordinator, n, pid, command_hash(args), timeout)
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=n, process_id=pid,
                                   initialization_timeout=max(1, int(timeout)))
    except (ValueError, TypeError, RuntimeError) as e:  # jax's XlaRuntimeError is a RuntimeError
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"jax.distributed could not start (coordinator {coordinator}, {n} processes, this one "
                         f"{pid}; waited {timeout:g} s): {first[:300]}") from None
    io.set_writer(jax.process_index() == 0)
    print(f"e5jax: process {jax.process_index()} of {jax.process_count()}, {jax.local_device_count()} of "
          f"{jax.device_count()} devices here; process 0 writes the outputs", file=sys.stderr)
    return True


def command_hash(args) -> str:
    """What every process of a job must agree on: the parsed command but for which process this is."""
    skip = {"func", "process_id", "coordinator_timeout", "no_progress"}
    items = sorted((k, str(v)) for k, v in vars(args).items() if k not in skip)
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]


def rendezvous(coordinator: str, n: int, pid: int, command: str, timeout: float) -> None:
    """Check the job before ``jax.distributed`` starts (its client aborts the process, with a C++ stack trace,
    when the coordinator cannot be reached or a process never joins): process 0 listens on the coordinator's port
    until the other ``n - 1`` processes have said who they are, the process count and the command they run, then
    answers each ``ok`` or the problem, and closes the port for JAX's service to take. Every failure is one
    ``UsageError`` line: a coordinator not reachable, processes missing, another process count, another command,
    a process id taken twice."""
    host, port = coordinator.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    me = {"process_id": pid, "num_processes": n, "command": command}
    if pid == 0:
        _gather_peers(host, int(port), me, deadline, timeout)
        return
    while True:
        try:
            conn = socket.create_connection((host, int(port)), timeout=1.0)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise UsageError(f"--coordinator {coordinator}: not reachable within {timeout:g} s (start process 0 "
                                 "of the job there, or raise --coordinator-timeout)") from None
            time.sleep(0.2)
    with conn, conn.makefile("rw") as f:
        conn.settimeout(max(1.0, deadline - time.monotonic() + 5.0))
        f.write(json.dumps(me) + "\n")
        f.flush()
        try:
            answer = f.readline().strip()
        except OSError:
            answer = ""
    if answer != "ok":
        raise UsageError(answer or f"--coordinator {coordinator}: process 0 did not answer within {timeout:g} s")


def _gather_peers(host: str, port: int, me: dict, deadline: float, timeout: float) -> None:
    n = me["num_processes"]
    peers, problem = {}, None
    with socket.create_server(("", port), reuse_port=hasattr(socket, "SO_REUSEPORT")) as server:
        while len(peers) < n - 1 and problem is None:
            server.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                conn, _ = server.accept()
            except (socket.timeout, TimeoutError):
                missing = sorted(set(range(1, n)) - set(peers))
                problem = (f"jax.distributed: process(es) {', '.join(map(str, missing))} of {n} did not join "
                           f"{host}:{port} within {timeout:g} s")
                break
            conn.settimeout(5.0)
            f = conn.makefile("rw")
            try:
                them = json.loads(f.readline())
            except (OSError, ValueError):
                conn.close()
                continue
            peers.setdefault(them.get("process_id"), []).append((conn, f))
            if them.get("num_processes") != n:
                problem = (f"jax.distributed: process {them.get('process_id')} was started for "
                           f"{them.get('num_processes')} processes, process 0 for {n}")
            elif them.get("command") != me["command"]:
                problem = (f"jax.distributed: process {them.get('process_id')} runs another command than process 0 "
                           "(every process runs the same one, but for --process-id)")
            elif len(peers[them.get("process_id")]) > 1 or them.get("process_id") == 0:
                problem = f"jax.distributed: two processes say they are process {them.get('process_id')}"
        for conns in peers.values():
            for conn, f in conns:
                try:
                    f.write(("ok" if problem is None else problem) + "\n")
                    f.flush()
                    f.readline()  # the peer closes first (its side keeps TIME_WAIT, not the coordinator's port)
                except OSError:
                    pass
                conn.close()
    if problem is not None:
        raise UsageError(problem)


def multi_process() -> bool:
    return jax.process_count() > 1


def check_rows(rows: int, what: str) -> None:
    """Under several processes every row axis is sharded over all devices: refuse one that does not divide."""
    n = len(jax.devices())
    if multi_process() and rows % n:
        raise UsageError(f"{what} = {rows} cannot be split evenly over the {n} devices of {jax.process_count()} "
                         f"processes; use a multiple of {n}")


_BARRIERS = [0]
BARRIER_TIMEOUT_S = 3600  # the watchdog (e5jax.watch) stops a stalled program long before


def barrier(what: str) -> None:
    """Wait until every process arrives here (the coordination service's barrier, not a collective: a process
    still compiling or training does not make the others' gloo context time out, as a first all-gather did after
    30 s under load). A no-op in a one-process run."""
    if not multi_process():
        return
    from jax._src import distributed

    _BARRIERS[0] += 1  # every process passes the same barriers in the same order
    distributed.global_state.client.wait_at_barrier(f"e5jax:{_BARRIERS[0]}:{what}", BARRIER_TIMEOUT_S * 1000)


def _gather(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return jax.device_get(x)


def to_host(tree):
    """``jax.device_get`` that also works on arrays sharded over other processes' devices: all-gathered once every
    process has computed its part (``barrier``)."""
    if multi_process():
        jax.block_until_ready(tree)
        barrier("to_host")
    return jax.tree_util.tree_map(_gather, tree)
