"""Every SLURM test, in one module (one xdist worker: the cluster has one node, and a test drains it): a smoke
family's whole DAG through sbatch as it runs locally, with the planned resources; and nothing lost when the
cluster misbehaves (issue 25, part 2): `snakemake --profile profiles/slurm` on a real one-node SLURM cluster
(profiles/slurm/local-cluster.sh) while the cluster, or the user, gets in its way.

Everything is real: slurmctld and slurmd, sbatch, scancel, scontrol, the pipeline's own Snakefile and stages.
One module fixture runs three workflows side by side, in three copies of the project on the smoke preset:

- disturbed: data -> splits -> the identity noise target. The `data` job is scancelled while it runs and the
  node is drained at once, so its retry (profiles/slurm has `retries: 1`) waits in the queue for a few
  seconds; then the node is resumed. While `splits` runs, the Snakemake controller itself is killed
  (SIGKILL); `snakemake --unlock` and a rerun with `--rerun-incomplete` finish the work. Every output must be
  the same, byte for byte, as the local engine's in the session's smoke run;
- runtime: the `weights` stage downloads from a mirror that sends one byte a second, under a 1-minute
  `runtime`: SLURM ends it with TIMEOUT (at its next time-limit check, up to 30 s after the minute);
- memory: the `data` stage under `mem_mb=100`: SLURM kills it for exceeding its memory (the local cluster
  enforces memory by polling every second, JobAcctGatherParams=OverMemoryKill, which ends such a job as
  FAILED; only its SLURM log says why).

The two killed runs use `--retries 0` (a retry with the same resources would be killed again, only later) and
must end with the Snakefile's `onerror` message naming the rule's resource key to raise.
docs/cluster.md, "When the cluster misbehaves", states what these tests establish.
"""

from __future__ import annotations

import http.server
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from helpers import make_project, run, same_output
from test_engines import outputs, scores, snakemake_commands, snakemake_jobs

SLURM_SKIP = None if os.geteuid() == 0 and (shutil.which("slurmctld") or shutil.which("apt-get")) else \
    "a local SLURM cluster needs root and Debian's packages (profiles/slurm/local-cluster.sh)"

needs_cluster = pytest.mark.skipif(SLURM_SKIP is not None, reason=SLURM_SKIP or "")

SCRIPT = Path(__file__).resolve().parents[1] / "profiles/slurm/local-cluster.sh"
SLURM = ["--profile", "profiles/slurm", "--slurm-status-command", "squeue",
         "--slurm-init-seconds-before-status-checks", "2"]
#: the disturbed workflow's targets: three jobs in a chain
CHAIN = ["data", "splits", "noise"]
TARGET = "data/fashion_mnist/noise/identity.safetensors"
OUTPUTS = ["data/fashion_mnist/raw", "data/fashion_mnist/splits.json", TARGET]
SLOW_FILE = "slow-mirror.pth"
DEADLINE = 900  # seconds for any one workflow: one to three minutes on a quiet machine, far longer on a loaded one


# ---------------------------------------------------------------------------------------------------- helpers


class SlowMirror(http.server.BaseHTTPRequestHandler):
    """Announces a 1 MiB file and sends one byte of it a second: each read succeeds, the download never ends."""

    stop = threading.Event()

    def do_GET(self):  # noqa: N802 - the base class's name
        self.send_response(200)
        self.send_header("Content-Length", str(1 << 20))
        self.end_headers()
        try:
            while not self.stop.wait(1.0):
                self.wfile.write(b"\0")
                self.wfile.flush()
        except OSError:  # the client is gone (SLURM killed it)
            pass

    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        pass


def start(cmd: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def submissions(log: Path) -> list[tuple[str, str]]:
    """(rule, SLURM job id) of every job a Snakemake log says it submitted, in order."""
    text = log.read_text() if log.is_file() else ""
    found = re.findall(r"submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/rule_(\w+)/", text)
    return [(rule, job) for job, rule in found]


def finished(log: Path) -> list[str]:
    """The rules of the jobs a Snakemake log reports finished."""
    return re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", log.read_text())


def slurm_state(job: str) -> str:
    return subprocess.run(["squeue", "-h", "--states=all", "-j", job, "-o", "%T"], capture_output=True,
                          text=True).stdout.strip()


def wait_for(what: str, check, proc: subprocess.Popen | None = None, log: Path | None = None, timeout=DEADLINE):
    """Poll `check()` every 0.2 s until it returns something true; fail naming `what` (and the log's tail)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = check()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.2)
    tail = log.read_text()[-3000:] if log is not None and log.is_file() else ""
    pytest.fail(f"gave up waiting for {what}\n{tail}")


def job_of(rule: str, log: Path, nth: int = 1):
    """A check: the SLURM id of the `nth` submission of `rule`, once the log shows it."""
    def check():
        ids = [job for r, job in submissions(log) if r == rule]
        return ids[nth - 1] if len(ids) >= nth else None
    return check


def state_is(job: str, *states: str):
    return lambda: slurm_state(job) in states


def node_name() -> str:
    return subprocess.run(["sinfo", "-h", "-o", "%N"], capture_output=True, text=True, check=True).stdout.split()[0]


def set_node(node: str, state: str) -> None:
    extra = ["reason=test_slurm_faults"] if state == "drain" else []
    subprocess.run(["scontrol", "update", f"nodename={node}", f"state={state}", *extra], check=True)


def project(base: Path, name: str, **params) -> Path:
    root = make_project(base / name, dvc_yaml=False)
    if params:
        doc = yaml.safe_load((root / "params.yaml").read_text())
        for key, value in params.items():
            doc[key].update(value)
        (root / "params.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return root


# ---------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    was_up = subprocess.run(["sinfo"], capture_output=True).returncode == 0 if shutil.which("sinfo") else False
    run(["bash", str(SCRIPT), "start"], tmp_path_factory.mktemp("cluster"))
    yield node_name()
    if not was_up:
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True)


@pytest.fixture(scope="module")
def faults(cluster, tmp_path_factory):
    """The three workflows (module docstring), side by side; returns their projects and logs."""
    base = tmp_path_factory.mktemp("slurm-faults")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowMirror)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{SLOW_FILE}"
    slow = project(base, "runtime", metrics={"inception": {"url": url, "sha256": "0" * 64}})
    hungry = project(base, "memory")
    disturbed = project(base, "disturbed")
    logs = {name: base / f"{name}.log" for name in ("runtime", "memory", "killed", "unlock", "rerun")}
    procs = {
        "runtime": start(["snakemake", f"data/weights/inception/{SLOW_FILE}", *SLURM, "--retries", "0",
                          "--set-resources", "weights:runtime=1"], slow, logs["runtime"]),
        "memory": start(["snakemake", "data/fashion_mnist/raw", *SLURM, "--retries", "0",
                         "--set-resources", "data:mem_mb=100"], hungry, logs["memory"]),
    }
    drained = False
    try:
        # both killed runs are on the node before the disturbed run drains it
        for name, rule in (("runtime", "weights"), ("memory", "data")):
            job = wait_for(f"the {rule} job's submission", job_of(rule, logs[name]), procs[name], logs[name])
            wait_for(f"job {job} to start", lambda: slurm_state(job) not in ("", "PENDING"), procs[name], logs[name])

        # 1. scancel the running data job; drain the node so that its retry waits in the queue; resume
        killed = procs["killed"] = start(["snakemake", TARGET, *SLURM], disturbed, logs["killed"])
        first = wait_for("the data job", job_of("data", logs["killed"]), killed, logs["killed"])
        wait_for(f"data job {first} to run", state_is(first, "RUNNING"), killed, logs["killed"])
        time.sleep(2)  # mid-way: the stage has started, its output is not written yet
        subprocess.run(["scancel", first], check=True)
        set_node(cluster, "drain")
        drained = True
        retry = wait_for("the data job's retry", job_of("data", logs["killed"], 2), killed, logs["killed"])
        wait_for(f"retry {retry} queued", state_is(retry, "PENDING"), killed, logs["killed"])
        time.sleep(4)
        queued = slurm_state(retry)  # still waiting on the drained node
        set_node(cluster, "resume")
        drained = False

        # 2. SIGKILL the controller while the splits job runs on SLURM
        splits = wait_for("the splits job", job_of("splits", logs["killed"]), killed, logs["killed"])
        wait_for(f"splits job {splits} to run", state_is(splits, "RUNNING"), killed, logs["killed"])
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        orphan = slurm_state(splits)  # the job goes on without its controller
        run(["snakemake", TARGET, "--unlock"], disturbed)
        procs["rerun"] = start(["snakemake", TARGET, *SLURM, "--rerun-incomplete"], disturbed, logs["rerun"])
        for name in ("rerun", "runtime", "memory"):
            procs[name].wait(timeout=DEADLINE)
    finally:
        if drained:
            set_node(cluster, "resume")
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
        SlowMirror.stop.set()
        server.shutdown()
        server.server_close()
    return {"disturbed": disturbed, "logs": logs, "rc": {name: p.returncode for name, p in procs.items()},
            "cancelled": first, "retry": retry, "queued": queued, "orphan": orphan}


# ---------------------------------------------------------------------------------------------------- tests


@pytest.mark.slurm
@needs_cluster
def test_a_job_killed_for_its_runtime_names_the_runtime_key(faults):
    log = faults["logs"]["runtime"].read_text()
    assert faults["rc"]["runtime"] != 0
    assert "SLURM status is: 'TIMEOUT'" in log, log[-3000:]
    assert re.search(r"rule weights: SLURM ended job \d+ with TIMEOUT: it ran past its time limit \(runtime 1\)\. "
                     r"Raise the rule's `runtime` \(minutes\) under set-resources in profiles/slurm/config\.yaml",
                     log), log[-3000:]
    assert "--set-resources weights:runtime=2" in log


@pytest.mark.slurm
@needs_cluster
def test_a_job_killed_for_its_memory_names_the_mem_mb_key(faults):
    log = faults["logs"]["memory"].read_text()
    assert faults["rc"]["memory"] != 0
    assert re.search(r"rule data: SLURM ended job \d+ with (FAILED|OUT_OF_MEMORY): it used more memory than it "
                     r"asked for \(mem_mb 100\)\. Raise the rule's `mem_mb` \(MB\) under set-resources in "
                     r"profiles/slurm/config\.yaml", log), log[-3000:]
    assert "--set-resources data:mem_mb=200" in log


@pytest.mark.slurm
@needs_cluster
def test_a_cancelled_job_and_a_drained_node_lose_nothing(faults, smoke_runs):
    """The scancelled job is retried (visibly), the retry waits out the drain, and every output equals the
    undisturbed local run's, byte for byte: no partial output was taken for a finished one."""
    killed = faults["logs"]["killed"].read_text()
    assert re.search(rf"SLURM-job '{faults['cancelled']}' failed, SLURM status is: 'CANCELLED'", killed), killed[-3000:]
    assert "Trying to restart job" in killed
    assert faults["queued"] == "PENDING"  # the retry sat in the queue while the node was drained
    assert finished(faults["logs"]["killed"]) == ["data"]  # the retry ran to the end once resumed
    root, reference = faults["disturbed"], smoke_runs["smk"]
    for output in OUTPUTS:
        files = [root / output] if (root / output).is_file() else \
            sorted(p for p in (root / output).rglob("*") if p.name != ".snakemake_timestamp")
        assert files, output
        for f in files:
            assert same_output(f, reference / f.relative_to(root)), f
    leftovers = [p.name for p in (root / "data").rglob(".*") if p.name.endswith(".tmp")]
    assert leftovers == []


@pytest.mark.slurm
@needs_cluster
def test_a_killed_controller_reruns_only_what_is_missing(faults, smoke_runs):
    """SIGKILL of the Snakemake controller while a job runs on SLURM: `--rerun-incomplete` submits only the jobs
    the killed controller had not seen finish (the one it was running among them, whatever that job's orphan
    wrote), and the results are the undisturbed run's."""
    assert faults["orphan"] in ("RUNNING", "COMPLETING", "COMPLETED")  # killed while its job ran on SLURM
    done = finished(faults["logs"]["killed"])
    rerun = faults["logs"]["rerun"]
    assert faults["rc"]["rerun"] == 0, rerun.read_text()[-3000:]
    resubmitted = [rule for rule, _ in submissions(rerun)]
    assert sorted(resubmitted) == sorted(set(CHAIN) - set(done)) == ["noise", "splits"]
    root, reference = faults["disturbed"], smoke_runs["smk"]
    assert same_output(root / TARGET, reference / TARGET)
    assert same_output(root / "data/fashion_mnist/splits.json", reference / "data/fashion_mnist/splits.json")
    assert "Nothing to be done" in run(["snakemake", TARGET, "-n"], root)


def test_a_cluster_that_reports_out_of_memory_gets_the_same_message(tmp_path):
    """Clusters that enforce memory with cgroups end such a job as OUT_OF_MEMORY (the local cluster polls, and
    says FAILED): the plugin's report of that state, in its own words, is enough for the message."""
    from pipeline_lib.engines.slurm_faults import explain

    log = tmp_path / "snakemake.log"
    log.write_text(
        "Job 3 has been submitted with SLURM jobid 987123 (log: /nowhere/.snakemake/slurm_logs/rule_pretrain/x/987123.log).\n"
        "Error in rule pretrain:\n"
        "    message: SLURM-job '987123' failed, SLURM status is: 'OUT_OF_MEMORY'. Reason: Step 0: OutOfMemory.\n"
        "    jobid: 3\n"
        "    external_jobid: 987123\n"
        "Error in rule splits:\n"
        "    message: SLURM-job '987124' failed, SLURM status is: 'CANCELLED'.\n"
        "    external_jobid: 987124\n"
        "Error in rule summary:\n"
        "    jobid: 5\n")
    (message,) = explain([str(log)])
    assert message.startswith("rule pretrain: SLURM ended job 987123 with OUT_OF_MEMORY: it used more memory than it "
                              "asked for. Raise the rule's `mem_mb` (MB) under set-resources in profiles/slurm/config.yaml")
    assert explain(None) == [] and explain([str(tmp_path / "absent.log")]) == []


@pytest.mark.slurm
@needs_cluster
def test_one_family_runs_on_a_real_slurm_cluster_as_it_runs_locally(smoke_runs, tmp_path):
    """`snakemake --profile profiles/slurm` as shipped, on a one-node cluster (no accounting: squeue for
    status), for the smoke preset's VQ-GAN: every rule kind of the smoke DAG goes through sbatch (the data, the
    split, the tokenizer before its model, pre-training, the extractor, reference features, the noise target,
    unlearning, generation, metrics, the summary and the report), and every file the family's jobs write is the
    same, byte for byte (training times aside), as the local engine's in the session's smoke run."""
    script = Path(__file__).resolve().parents[1] / "profiles/slurm/local-cluster.sh"
    was_up = subprocess.run(["sinfo"], capture_output=True).returncode == 0 if shutil.which("sinfo") else False
    run(["bash", str(script), "start"], tmp_path)
    try:
        root = make_project(tmp_path / "slurm", dvc_yaml=False)
        params = yaml.safe_load((root / "params.yaml").read_text())
        params["models"] = ["vqgan"]
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        # the run plan first: its resources file is what the rules ask SLURM for (tests/test_plan.py)
        run(["python", "-m", "pipeline_lib", "plan"], root)
        resources = yaml.safe_load((root / "profiles/slurm/planned-resources.yaml").read_text())["resources"]
        planned = snakemake_jobs(run(["snakemake", "--profile", "profiles/local", "-n"], root))
        assert planned == snakemake_jobs(smoke_runs["smk_log"])  # every rule kind the local smoke run ran
        log = run(["snakemake", "--profile", "profiles/slurm", "--slurm-status-command", "squeue",
                   "--slurm-init-seconds-before-status-checks", "2"], root)
        submitted = re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+)", log)
        # what SLURM received, per job (scontrol keeps finished jobs for MinJobAge = 600 s): the plan's
        # runtime, memory and GPUs for the job's rule and family; a rule that runs no network asks no GPU
        received, wanted = {}, {}
        for jobid in submitted:
            info = subprocess.run(["scontrol", "show", "job", jobid], capture_output=True, text=True).stdout
            rule = re.search(r"Comment=rule_(.+?)(?:_wildcards_|\s)", info).group(1)
            h, m, _ = re.search(r"TimeLimit=(?:(\d+)-)?(\d+:\d+:\d+)", info).group(2).split(":")
            mem, unit = re.search(r"MinMemoryNode=(\d+)([MG])", info).groups()
            gpus = re.search(r"gres[/:]gpu[:=](\d+)", info)  # TresPerJob=gres:gpu:1 (gres/gpu=1 in TRES)
            received[jobid] = {"rule": rule, "runtime": int(h) * 60 + int(m),
                               "mem_mb": int(mem) * (1024 if unit == "G" else 1), "gpu": int(gpus.group(1)) if gpus else 0}
            entries = resources[rule]
            wanted[jobid] = {"rule": rule, **entries.get("vqgan", entries.get("_"))}
        assert received == wanted
        assert {r["rule"] for r in received.values() if r["gpu"]} == {"pretrain_part", "pretrain", "extractor",
                                                                        "unlearn", "generate"}
        # every job went through sbatch: as many submissions as there are commands (data, split, tokenizer,
        # pre-training, extractor, reference, noise, unlearning, 2 generate, 2 metrics, summary, report)
        assert len(submitted) == len(snakemake_commands(log)) == 14, log[-3000:]
        family_files = {f for f in outputs(root) if "/report/" not in f}  # the report holds one family here
        assert family_files and family_files <= outputs(smoke_runs["smk"])
        assert [f for f in sorted(family_files) if not same_output(root / f, smoke_runs["smk"] / f)] == []
        assert scores(root) == {k: v for k, v in scores(smoke_runs["smk"]).items() if "/vqgan/" in k}
    finally:
        if not was_up:
            subprocess.run(["bash", str(script), "stop"], capture_output=True)
