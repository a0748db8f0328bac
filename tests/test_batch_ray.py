"""``ferlab batch --engine ray`` on a real 2-node Ray cluster started (and always stopped) by these tests.

The cluster: a head and a second node, each ``ray start --node-ip-address 127.0.0.1 --num-cpus 2`` with a
small object store, inside a network namespace of their own (``unshare -n``, loopback up), so that every
byte goes over 127.0.0.1 and no other Ray on the machine is seen or touched.  Drivers join the namespace
with ``nsenter --net``.  Stopping kills, by pid, exactly the processes living in that namespace.

No timing assertions: waits are polls with generous deadlines.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers_models import ROOT
from test_batch import (
    FERLAB,
    MODEL,
    check_exactly_once,
    labels,
    make_dataset,
    manifest_units,
    planned_keys,
    run_cli,
)

pytest.importorskip("pyarrow", reason="the [scale] extra (pyarrow) is not installed")
pytest.importorskip("ray", reason="the [scale] extra (ray) is not installed")

RAY = str(Path(sys.executable).with_name("ray"))
PORT = 6390
ADDRESS = f"127.0.0.1:{PORT}"


def _can_unshare() -> bool:
    try:
        return subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class LocalCluster:
    """A head node and a worker node of Ray on this machine, in their own network namespace."""

    def __init__(self, logdir: Path):
        self.logdir = logdir
        self.holder: subprocess.Popen | None = None
        self.ns: str | None = None
        self.prefix: list[str] = []
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1",
                    "RAY_BACKEND_LOG_LEVEL": "error",
                    # Ray starts workers at nice 15: on a machine shared with training runs the actors would
                    # get a few percent of a core; the pool's workers (the reference) run at nice 0
                    "RAY_worker_niceness": "0",
                    # a ~/.ray/auth_token on this machine (a private ray.init() writes one) would turn on token
                    # authentication for `ray start`: this cluster lives on a loopback of its own
                    "RAY_AUTH_MODE": "disabled",
                    # a starved machine must not make the GCS declare a live node dead (defaults: ~15-30 s)
                    "RAY_health_check_period_ms": "10000", "RAY_health_check_timeout_ms": "60000",
                    "RAY_health_check_failure_threshold": "30", "RAY_gcs_rpc_server_reconnect_timeout_s": "600"}
        self.temp_dir = f"/tmp/ferlab-ray-{os.getpid()}"

    def start(self) -> None:
        self.holder = subprocess.Popen(["unshare", "-n", "sh", "-c", "ip link set lo up && exec sleep 100000"],
                                       start_new_session=True)
        net = f"/proc/{self.holder.pid}/ns/net"
        deadline = time.time() + 300
        while time.time() < deadline:  # wait until the holder is in its new namespace with lo up
            if os.readlink(net) != os.readlink("/proc/self/ns/net"):
                probe = subprocess.run(["nsenter", f"--net={net}", "--", "ip", "-o", "link", "show", "lo"],
                                       capture_output=True, text=True)
                if "UP" in probe.stdout:
                    break
            time.sleep(0.1)
        self.ns = os.readlink(net)
        self.prefix = ["nsenter", f"--net={net}", "--"]
        common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "2", "--object-store-memory", str(80 * 2**20),
                  "--disable-usage-stats"]
        # On a heavily loaded machine `ray start` may give up after its fixed 30 s wait for the node to
        # register although the node comes up later: poll the cluster itself, and try a node again once.
        self._ray_start(["--head", "--port", str(PORT), "--include-dashboard", "false", "--temp-dir",
                         self.temp_dir, *common], "head")
        self._wait_nodes(1)
        for attempt in range(2):
            self._ray_start(["--address", ADDRESS, *common], f"node2_{attempt}")
            if self._wait_nodes(2, fail=attempt == 1):
                break

    def _wait_nodes(self, n: int, fail: bool = True, timeout: float = 600) -> bool:
        code = textwrap.dedent(f"""
            import time
            import ray
            ray.init(address={ADDRESS!r}, logging_level="ERROR")
            deadline = time.time() + {timeout}
            while sum(n["Alive"] for n in ray.nodes()) < {n} and time.time() < deadline:
                time.sleep(1)
            print("NODES", sum(n["Alive"] for n in ray.nodes()), int(ray.cluster_resources().get("CPU", 0)))
        """)
        try:
            r = subprocess.run([*self.prefix, sys.executable, "-c", code], capture_output=True, text=True,
                               timeout=timeout + 600, env=self.env)
        except subprocess.TimeoutExpired:
            r = None
        ok = r is not None and f"NODES {n} {2 * n}" in r.stdout
        if fail:
            assert ok, (r.stdout, r.stderr[-2000:]) if r is not None else "the cluster did not answer"
        return ok

    def _ray_start(self, args: list[str], name: str) -> int:
        with open(self.logdir / f"ray_start_{name}.log", "w") as log:
            r = subprocess.run([*self.prefix, RAY, "start", *args], stdout=log, stderr=subprocess.STDOUT,
                               env=self.env, timeout=900, start_new_session=True)
        return r.returncode

    def pids(self, needle: str = "") -> list[int]:
        """Processes living in the cluster's network namespace (optionally: whose command line has needle)."""
        out = []
        if self.ns is None:
            return out
        for d in Path("/proc").iterdir():
            if not d.name.isdigit() or (self.holder and int(d.name) == self.holder.pid):
                continue
            try:
                if os.readlink(d / "ns" / "net") != self.ns:
                    continue
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if needle in cmd:
                out.append(int(d.name))
        return out

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
            deadline = time.time() + 15
            while self.pids() and time.time() < deadline:
                time.sleep(0.2)
        if self.holder is not None:
            self.holder.kill()
            self.holder.wait(timeout=30)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def driver(self, *args, **kw) -> subprocess.Popen:
        return subprocess.Popen([*self.prefix, *FERLAB, *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=self.env, **kw)

    def run(self, *args, timeout=1800) -> subprocess.CompletedProcess:
        return run_cli(*args, timeout=timeout, env=self.env, prefix=self.prefix)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if not _can_unshare():
        pytest.skip("unshare -n is not permitted here: the test cluster needs a network namespace of its own")
    c = LocalCluster(tmp_path_factory.mktemp("ray_logs"))
    try:
        c.start()
        yield c
    finally:
        c.stop()  # always, also when start() or a test failed
    assert not c.pids(), "Ray processes survived the cluster's stop"


@pytest.fixture(scope="module")
def big(tmp_path_factory, fer_sample):
    """2,000 crops, 3 short videos, the example photos and a corrupt file; and the local pool's results."""
    d = make_dataset(tmp_path_factory.mktemp("ray_data"), fer_sample, n_crops=2000, n_videos=3)
    ref = tmp_path_factory.mktemp("ray_ref") / "out"
    r = run_cli("batch", d["root"], "--out", ref, "--model", MODEL, "--workers", 2, "--segment-seconds", 1, "-q")
    assert r.returncode == 0, r.stderr
    d["reference"] = ref
    d["keys"] = planned_keys(d["root"])
    assert len(d["keys"]) > 2000
    return d


RAY_ARGS = ("--model", MODEL, "--engine", "ray", "--address", ADDRESS, "--workers", 2, "--segment-seconds", 1, "-q")


def _nodes(out: Path) -> set[str]:
    return {u["worker"].split(":")[0] for u in manifest_units(out)}


def test_two_node_job_matches_the_local_engine_exactly_once(cluster, big, tmp_path):
    out = tmp_path / "out"
    r = cluster.run("batch", big["root"], "--out", out, *RAY_ARGS)
    assert r.returncode == 0, r.stderr[-3000:]
    check_exactly_once(out, big["keys"])
    assert labels(out) == labels(big["reference"])
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["nodes"] == 2 and summary["cluster_cpus"] == 4
    assert len(_nodes(out)) == 2, "the actors should be spread over both nodes"


def _wait_for_parts(out: Path, p: subprocess.Popen, n: int = 1, timeout: float = 1800) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and p.poll() is None:
        if len(list((out / "_manifest").glob("part-*.json"))) >= n:
            return
        time.sleep(0.1)
    raise AssertionError(f"no committed part before the job ended (rc={p.poll()}): "
                         f"{p.stderr.read()[-2000:] if p.poll() is not None else ''}")


def test_a_killed_ray_worker_does_not_stop_the_job(cluster, big, tmp_path):
    """SIGKILL one of the job's actor processes mid-job: Ray restarts it and retries its task; every input
    is still written exactly once with the local engine's labels."""
    out = tmp_path / "out"
    p = cluster.driver("batch", big["root"], "--out", out, *RAY_ARGS, "--batch-size", 8, "--part-inputs", 50,
                       "--flush-seconds", 1)
    try:
        _wait_for_parts(out, p)
        victims = []
        deadline = time.time() + 600
        while not victims and time.time() < deadline and p.poll() is None:
            victims = cluster.pids("MapWorker")
            time.sleep(0.1)
        assert victims and p.poll() is None, "no actor to kill while the job ran"
        assert len(manifest_units(out)) < len(big["keys"])
        os.kill(victims[0], signal.SIGKILL)
        _, err = p.communicate(timeout=1800)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=60)
    assert p.returncode == 0, err[-3000:]
    check_exactly_once(out, big["keys"])
    assert labels(out) == labels(big["reference"])


def test_a_killed_driver_resumes_without_duplicates(cluster, big, tmp_path):
    out = tmp_path / "out"
    p = cluster.driver("batch", big["root"], "--out", out, *RAY_ARGS, "--batch-size", 8, "--part-inputs", 50,
                       "--flush-seconds", 1)
    try:
        _wait_for_parts(out, p, n=2)
        assert p.poll() is None
        os.kill(p.pid, signal.SIGKILL)  # nsenter execs the driver: this pid is the ferlab process
        p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=60)
    first = manifest_units(out)
    assert 0 < len(first) < len(big["keys"])
    r = cluster.run("batch", big["root"], "--out", out, *RAY_ARGS)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "already done" in r.stderr
    check_exactly_once(out, big["keys"])
    assert labels(out) == labels(big["reference"])


def test_a_cluster_without_ferlab_is_one_line(cluster, big, tmp_path):
    """Workers whose Python cannot import ferlab (here: a runtime env whose PYTHONPATH shadows it with a
    broken package) -> one line naming what is missing, exit 2, and no output written."""
    shadow = tmp_path / "shadow" / "ferlab"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'ferlab'\", name='ferlab')\n")
    env = json.dumps({"env_vars": {"PYTHONPATH": str(shadow.parent)}})
    out = tmp_path / "out"
    r = cluster.run("batch", big["photos"], "--out", out, *RAY_ARGS, "--runtime-env", env, timeout=1800)
    assert r.returncode == 2, r.stderr[-3000:]
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("ferlab batch")]
    assert len(lines) == 1 and "lack ferlab" in lines[0] and "ferlab[scale]" in lines[0], r.stderr[-3000:]
    assert not manifest_units(out)
    assert not list(out.rglob("*.parquet"))
