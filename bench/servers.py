"""The processes a benchmark runs on 127.0.0.1, and a description of the machine.

Every server here is a context manager: it starts in `__enter__` and is stopped (and
waited for) in `__exit__`, so a benchmark that fails half-way leaves nothing running.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Self

HERE = Path(__file__).resolve().parent
sys.path.insert(1, str(HERE.parent))

from proxy.config import Settings  # noqa: E402 - the project, from this checkout

SMALL_BODY = b"consent-proxy benchmark: a small fixed response from the upstream.\n"
BIG_FILE = "big.bin"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Wait until the server on `port` answers an HTTP request (any status)."""
    deadline = time.monotonic() + timeout
    request = b"GET / HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with status {proc.returncode}")
        with contextlib.suppress(OSError):
            with socket.create_connection(("127.0.0.1", port), 0.5) as sock:
                sock.sendall(request)
                if sock.recv(16).startswith(b"HTTP/1."):
                    return
        time.sleep(0.05)
    raise TimeoutError(f"nothing answers HTTP on port {port}")


def _die_with_parent() -> None:
    """In the child, before exec: be sent SIGTERM when the benchmark dies, however it dies
    (Linux; elsewhere the `with` blocks are the only cleanup)."""
    with contextlib.suppress(OSError, AttributeError):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def exit_on_sigterm() -> None:
    """Let SIGTERM (e.g. from `timeout`) unwind the `with` blocks that stop the servers."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Server:
    """A subprocess listening on `port`; stopped on exit."""

    name = "server"

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix=f"bench-{self.name}-")
        self.dir = Path(self._tmp.name)
        self.dir.chmod(0o755)  # nginx workers may run as another user

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> Sequence[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        """The environment of the process (None: this one's)."""
        return None

    def __enter__(self) -> Self:
        try:
            log = (self.dir / "stderr.log").open("wb")
            self.proc = subprocess.Popen(
                list(self.command()),
                stdout=subprocess.DEVNULL,
                stderr=log,
                cwd=self.dir,
                env=self.env(),
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
            wait_http(self.port, self.proc)
        except BaseException as exc:
            logs = self.logs()
            self.__exit__(None, None, None)
            if isinstance(exc, Exception) and logs:
                raise RuntimeError(f"{self.name} did not start: {exc}\n{logs}") from exc
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self.proc is not None:
                stop_process(self.proc, self.stop_signal)
            if isinstance(exc, Exception) and self.proc is not None and self.dir.exists():
                logs = self.logs()  # it may have crashed mid-run: say what it said
                if logs:
                    print(f"--- {self.name} logs ---\n{logs}", file=sys.stderr)
        finally:
            self._tmp.cleanup()

    stop_signal = signal.SIGTERM

    def logs(self, lines: int = 20) -> str:
        """The end of what the server wrote to stderr and its error log."""
        out = []
        for path in (self.dir / "stderr.log", self.dir / "error.log"):
            text = path.read_text(errors="replace").strip() if path.exists() else ""
            out += text.splitlines()[-lines:]
        return "\n".join(out)


class Nginx(Server):
    """nginx from a temporary config: `server_blocks` is the text inside `http {}`."""

    name = "nginx"
    stop_signal = signal.SIGQUIT  # graceful: workers finish and exit before the master

    def __init__(self, workers: int = 1) -> None:
        super().__init__()
        self.workers = workers

    def server_blocks(self) -> str:
        raise NotImplementedError

    def command(self) -> Sequence[str]:
        user = "user root;\n" if os.geteuid() == 0 else ""
        temp = "\n".join(
            f"    {kind}_temp_path {self.dir / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        conf = f"""{user}worker_processes {self.workers};
daemon off;
pid {self.dir / "nginx.pid"};
error_log {self.dir / "error.log"} warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    default_type application/octet-stream;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
{temp}
{self.server_blocks()}
}}
"""
        (self.dir / "nginx.conf").write_text(conf)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        return [nginx, "-p", str(self.dir), "-e", str(self.dir / "error.log"),
                "-c", str(self.dir / "nginx.conf")]  # fmt: skip


class Upstream(Nginx):
    """The fixed upstream: `/` a small fixed body; `/big` a file of `big_bytes` bytes."""

    name = "upstream"

    def __init__(self, big_bytes: int = 0, workers: int = 1) -> None:
        super().__init__(workers)
        self.big_bytes = big_bytes
        if big_bytes:
            # Sparse: no disk used, and reading it costs the page cache nothing.
            with (self.dir / BIG_FILE).open("wb") as fh:
                fh.truncate(big_bytes)
            (self.dir / BIG_FILE).chmod(0o644)
            # Read it once: the first read fills the page cache, and whichever stream came
            # first would pay for that.
            buf = bytearray(1024 * 1024)
            with (self.dir / BIG_FILE).open("rb", buffering=0) as fh:
                while fh.readinto(buf):
                    pass

    def server_blocks(self) -> str:
        body = SMALL_BODY.decode().replace("\n", "\\n")
        return f"""    server {{
        listen 127.0.0.1:{self.port} reuseport backlog=4096;
        location = / {{ default_type text/plain; return 200 "{body}"; }}
        location = /big {{ root {self.dir}; sendfile on; try_files /{BIG_FILE} =404; }}
    }}"""


class NginxProxy(Nginx):
    """nginx as a reverse proxy: one listener per upstream, streaming both ways."""

    name = "nginx-proxy"

    def __init__(self, upstreams: Sequence[str], workers: int = 1) -> None:
        super().__init__(workers)
        self.upstreams = list(upstreams)
        self.ports = [self.port] + [free_port() for _ in self.upstreams[1:]]

    def server_blocks(self) -> str:
        blocks = []
        for i, (port, url) in enumerate(zip(self.ports, self.upstreams, strict=True)):
            blocks.append(f"""    upstream up{i} {{
        server {url.removeprefix("http://")};
        keepalive 256;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        client_max_body_size 0;
        location / {{
            proxy_pass http://up{i};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            # Streaming both ways, read in pieces as large as consent-proxy's (256 KiB).
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_buffer_size 256k;
            proxy_buffers 4 256k;
            proxy_busy_buffers_size 512k;
            client_body_buffer_size 256k;
        }}
    }}""")
        return "\n".join(blocks)


class ConsentProxy(Server):
    """`consent-proxy run` in front of `upstream_url`."""

    name = "consent-proxy"

    def __init__(self, upstream_url: str, workers: int = 1, source: Path | None = None) -> None:
        super().__init__()
        self.workers = workers
        self.source = source  # another checkout's tree to run instead of this one
        self.config = self.dir / "config.yaml"
        config: dict[str, object] = {"upstream": {"url": upstream_url}}
        config["logging"] = {"level": os.environ.get("BENCH_LOG_LEVEL", "warning")}
        if "ops" in Settings.model_fields:  # its own listener: a free port for each proxy
            config["ops"] = {"port": free_port()}
        self.config.write_text(json.dumps(config))  # JSON is YAML

    def command(self) -> Sequence[str]:
        script = Path(sys.executable).with_name("consent-proxy")
        run = [str(script)] if script.exists() else [sys.executable, "-m", "proxy.cli"]
        return [*run, "run", "--config", str(self.config), "--host", "127.0.0.1",
                "--port", str(self.port), "--workers", str(self.workers)]  # fmt: skip

    def env(self) -> dict[str, str] | None:
        if self.source is None:
            return None
        # Its `proxy` package is found before this checkout's (installed in development mode).
        return {**os.environ, "PYTHONPATH": str(self.source.resolve())}

    @property
    def processes(self) -> list[int]:
        """The process ids that do the work: the server, or its worker processes."""
        import psutil

        parent = psutil.Process(self.pid)
        children = parent.children()
        return [c.pid for c in children] if self.workers > 1 and children else [self.pid]


class Backend(Server):
    """backend.py: the upload sink, and the upstream when nginx is not installed."""

    name = "backend"

    def __init__(self, big_bytes: int = 0) -> None:
        super().__init__()
        self.big_bytes = big_bytes

    def command(self) -> Sequence[str]:
        return [sys.executable, str(HERE / "backend.py"), str(self.port), str(self.big_bytes)]


def have_nginx() -> bool:
    return shutil.which("nginx") is not None or Path("/usr/sbin/nginx").exists()


def fixed_upstream(big_bytes: int = 0) -> Server:
    """nginx serving the fixed response when it is installed, else backend.py."""
    return Upstream(big_bytes) if have_nginx() else Backend(big_bytes)


# --- the machine -----------------------------------------------------------------------------


def _first_line(cmd: Sequence[str]) -> str:
    try:
        out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "absent"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "absent"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_lines(dists: Sequence[str]) -> Iterator[str]:
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kib / 1024 / 1024:.1f} GiB RAM"
    yield f"machine: {cpu_model()}, {os.cpu_count()} cores{mem}, {platform.platform()}"
    yield f"python:  {sys.version.split()[0]} ({platform.python_implementation()})"
    yield "packages: " + ", ".join(f"{d} {_version(d)}" for d in dists)
    nginx = shutil.which("nginx")
    yield f"nginx:   {_first_line([nginx, '-v']) if nginx else 'absent'}"
    wrk = shutil.which("wrk")
    yield f"wrk:     {_first_line([wrk, '-v']) if wrk else 'absent'}"


def start_report(dists: Sequence[str], title: str = "") -> None:
    """What every benchmark does first: let SIGTERM stop its servers, then print its title
    and the machine, Python, packages and tools the numbers below come from."""
    exit_on_sigterm()
    if title:
        print(title)
    for line in machine_lines(dists):
        print(line)
