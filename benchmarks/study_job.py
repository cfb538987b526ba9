"""Run a study through `ray job submit` against `ray start --head` on this host, then report it.

What docs/cluster.md describes, end to end, for a GPU check (issue #10's repeatability study):
1. `ray start --head` in a session of its own (so the head outlives the shell that called this:
   seen on the lent H200, where a command's process tree is killed when it returns and a study
   that outlasted it stopped with it) unless a head already answers on 127.0.0.1:8265;
2. `ray job submit --no-wait --working-dir . -- python -m llem_ray.study STUDY --output OUT`, with
   Ray 2.60's auth token; the submission id is kept in OUT/job_id, so a second call with the same
   OUT waits for the same job instead of submitting another one;
3. waits up to `--wait-s` for the job (exit 3 if it is still running: call again to keep waiting);
4. `llem report` of the study directory, and one line per configuration: J/token mean and CV over
   cycles, tokens/s, mean power, host-bound flag, methodology; for a serving configuration also its
   offered and achieved rate, TTFT/TPOT p50 and p99, SLO attainment, J/token over its steady window
   and J per SLO-meeting request; and, where a study has both, the J/token of each fixed-concurrency
   serving configuration against the offline one of the same model and backend (the consistency check,
   with the 95 % interval of the difference over cycles).

    python benchmarks/study_job.py configs/study-vllm-repeatability.yaml --output /tmp/vllm-study --wait-s 540

`--resume STUDY_DIR` (an absolute path: the job runs in an uploaded copy of the repository) submits
`python -m llem_ray.study STUDY --resume STUDY_DIR` instead, e.g. for a study directory carried back
to a fresh machine; it is reported from there. `--summarise STUDY_DIR` submits nothing: it prints
step 4's lines for a study directory on this machine (one copied back from the GPU host, say).

Exit codes: 0 job succeeded (report written), 1 job failed or stopped, or the head is gone (the
study directory's manifest then says what completed: `--resume` it), 3 still running.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from scipy import stats

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = "http://127.0.0.1:8265"
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED", "HEAD_GONE")


def ray(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    """The finished `ray` CLI call (text), in a new session; raises CalledProcessError when `check` and it fails."""
    done = subprocess.run(["ray", *args], env=env, capture_output=True, text=True, timeout=300, start_new_session=True)
    if check and done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, ["ray", *args], done.stdout, done.stderr)
    return done


def head_answers() -> bool:
    """Whether a Ray dashboard (job API) answers on 127.0.0.1:8265 (401 without a token counts)."""
    try:
        urllib.request.urlopen(f"{DASHBOARD}/api/version", timeout=2)
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def job_status(job_id: str, env: dict[str, str]) -> str:
    """The job's status word (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED) from `ray job status`.

    Ray 2.60 prints e.g. "Job 'x' succeeded" or "Status for job 'x': RUNNING".
    """
    done = ray("job", "status", "--address", DASHBOARD, job_id, env=env, check=False)
    if done.returncode != 0 and not head_answers():
        return "HEAD_GONE"
    text = (done.stdout + done.stderr).upper()
    for word in ("SUCCEEDED", "FAILED", "STOPPED", "RUNNING", "PENDING"):
        if word in text:
            return word
    return "UNKNOWN"


def serving_line(r: dict[str, str]) -> str:
    """The serving figures of one summary row (means over cycles; CIs in brackets)."""
    return (
        f"  serving: offered {r['serving.offered_rate_req_s_mean']} req/s, "
        f"achieved {r['serving.achieved_rate_req_s_mean']}, "
        f"TTFT p50/p99 {r['serving.latency.ttft.p50_ms_mean']}/{r['serving.latency.ttft.p99_ms_mean']} ms, "
        f"TPOT p50/p99 {r['serving.latency.tpot.p50_ms_mean']}/{r['serving.latency.tpot.p99_ms_mean']} ms, "
        f"SLO attainment {r['serving.slo_attainment_mean']} [{r['serving.slo_attainment_ci95_low']}, "
        f"{r['serving.slo_attainment_ci95_high']}], "
        f"J/token (window) {r['serving.energy_per_output_token_j_mean']}, "
        f"J/SLO-meeting request {r['serving.energy_per_slo_request_j_mean']} "
        f"[{r['serving.energy_per_slo_request_j_ci95_low']}, {r['serving.energy_per_slo_request_j_ci95_high']}] "
        f"(adjusted {r['serving.energy_per_slo_request_adjusted_j_mean']}), "
        f"window power {r['serving.mean_power_w_mean']} W"
    )


CONSISTENCY_TOLERANCE = 0.02
"""Issue #17's target: J/token at saturation within 2 % of the offline J/token."""


def _ci(row: dict[str, str], prefix: str) -> str:
    """`[low, high]` of a summary row's 95 % CI columns for `prefix`, or `[n/a]` when missing."""
    low, high = row.get(f"{prefix}_ci95_low"), row.get(f"{prefix}_ci95_high")
    return f"[{float(low):.5g}, {float(high):.5g}]" if low and high else "[n/a]"


def difference_interval(s: dict[str, str], o: dict[str, str], prefix: str) -> tuple[float, float] | None:
    """95 % interval of (mean of `s` - mean of `o`) / mean of `o` for `prefix`, from each row's
    `_n`, `_mean` and `_std` (Welch's t, Satterthwaite's degrees of freedom); None with fewer than
    2 cycles on either side or no spread at all."""
    try:
        (ns, ms, ss), (no, mo, so) = [[float(r[f"{prefix}_{k}"]) for k in ("n", "mean", "std")] for r in (s, o)]
    except (KeyError, ValueError):
        return None
    if ns < 2 or no < 2:
        return None
    vs, vo = ss**2 / ns, so**2 / no
    if vs + vo == 0:
        return None
    dof = (vs + vo) ** 2 / (vs**2 / (ns - 1) + vo**2 / (no - 1))
    half = stats.t.ppf(0.975, dof) * math.sqrt(vs + vo)
    return (ms - mo - half) / mo, (ms - mo + half) / mo


def consistency_lines(rows: list[dict[str, str]]) -> list[str]:
    """J/token of every fixed-concurrency serving row against the offline rows of its model and backend.

    Each line gives both means with their 95 % CIs over cycles, the difference in % with its 95 %
    interval (`difference_interval`, from the rows' J/token over cycles: a serving run's is its
    steady window's), and whether the difference of the means is within CONSISTENCY_TOLERANCE; the
    interval says whether the cycles can tell: `inside`, `outside` or `across` the tolerance.
    """
    out = []
    prefix = "energy_per_output_token_j"
    for s in rows:
        serving_j_text = s["serving.energy_per_output_token_j_mean"]
        if s["scenario"] != "serving" or not s["serving.concurrency"] or not serving_j_text:
            continue
        for o in rows:
            if o["scenario"] == "offline" and (o["model"], o["backend"]) == (s["model"], s["backend"]):
                serving_j, offline_j = float(serving_j_text), float(o[f"{prefix}_mean"])
                diff = serving_j / offline_j - 1
                verdict = "within" if abs(diff) <= CONSISTENCY_TOLERANCE else "NOT within"
                interval = difference_interval(s, o, prefix)
                if interval is None:
                    spread = "interval n/a"
                else:
                    low, high = interval
                    inside = -CONSISTENCY_TOLERANCE <= low and high <= CONSISTENCY_TOLERANCE
                    outside = low > CONSISTENCY_TOLERANCE or high < -CONSISTENCY_TOLERANCE
                    where = "inside" if inside else "outside" if outside else "across"
                    spread = f"95 % interval [{100 * low:+.2f}, {100 * high:+.2f}] %, {where} the tolerance"
                out.append(
                    f"consistency: {s['name']} J/token {serving_j:.5g} {_ci(s, prefix)} vs "
                    f"{o['name']} {offline_j:.5g} {_ci(o, prefix)} "
                    f"({o['measurement_methodology']}): {100 * diff:+.2f} % ({spread}), {verdict} "
                    f"{100 * CONSISTENCY_TOLERANCE:.0f} %"
                )
    return out


def summarise(study_dir: Path) -> None:
    """Write the report of `study_dir` and print one line per configuration from its summary.csv."""
    subprocess.run([sys.executable, "-m", "llem_ray", "report", str(study_dir)], check=True, cwd=REPO)
    with open(study_dir / "report" / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for r in rows:
        print(
            f"{r['name']}: batch {r['batch_size']}, cycles {r['n_cycles']}, {r['measurement_methodology']}, "
            f"J/token {r['energy_per_output_token_j_mean']} (CV {r['energy_per_output_token_j_cv']}), "
            f"tok/s {r['tokens_per_second_mean']} (CV {r['tokens_per_second_cv']}), "
            f"power {r.get('mean_power_w_mean')} W, host-bound {r['host_bound_any']}",
            flush=True,
        )
        if r["scenario"] == "serving":
            print(serving_line(r), flush=True)
    for line in consistency_lines(rows):
        print(line, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", type=Path, nargs="?", help="the study YAML (not with --summarise)")
    parser.add_argument("--output", type=Path, help="study output directory (absolute or relative)")
    parser.add_argument("--wait-s", type=float, default=540.0, help="longest wait for the job in this call, s")
    parser.add_argument("--resume", type=Path, help="resume the study in this directory (absolute path)")
    parser.add_argument("--summarise", type=Path, help="only print the lines of this finished study directory")
    args = parser.parse_args()
    if args.summarise is not None:
        summarise(args.summarise.resolve())
        return 0
    if args.study is None or args.output is None:
        parser.error("a study YAML and --output are required (or --summarise STUDY_DIR)")
    out = args.output.resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if not head_answers():
        print(ray("start", "--head", "--disable-usage-stats", env=env).stdout[-400:], flush=True)
    token = ray("get-auth-token", env=env, check=False)
    if token.returncode != 0:  # no token on this host yet: Ray 2.60 makes one on request
        token = ray("get-auth-token", "--generate", env=env)
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token.stdout.strip().splitlines()[-1])
    id_file = out / "job_id"
    if id_file.is_file():
        job_id = id_file.read_text().strip()
    else:
        job_id = f"llem-study-{int(time.time())}"
        where = ["--resume", str(args.resume.resolve())] if args.resume else ["--output", str(out)]
        ray(
            "job",
            "submit",
            "--address",
            DASHBOARD,
            "--no-wait",
            "--submission-id",
            job_id,
            "--working-dir",
            str(REPO),
            "--",
            "python3",
            "-m",
            "llem_ray.study",
            str(args.study),
            *where,
            "--quiet",
            env=env,
        )
        id_file.write_text(job_id + "\n")
        print(f"submitted {job_id}", flush=True)
    deadline = time.monotonic() + args.wait_s
    status = job_status(job_id, env)
    while status not in TERMINAL and time.monotonic() < deadline:
        time.sleep(10)
        status = job_status(job_id, env)
    logs = ray("job", "logs", "--address", DASHBOARD, job_id, env=env, check=False).stdout
    (out / "job.log").write_text(logs)
    print(f"job {job_id}: {status}\n{logs[-3000:]}", flush=True)
    if status not in TERMINAL:
        return 3
    studies = [args.resume.resolve()] if args.resume else sorted(p for p in out.iterdir() if p.is_dir())
    if studies:
        summarise(studies[-1])
    return 0 if status == "SUCCEEDED" else 1


if __name__ == "__main__":
    sys.exit(main())
