"""The TensorRT-LLM build tools as subprocesses, for the ``engine`` runtime of :mod:`llm_demo.build`.

* :func:`convert_command`: argv of ``convert_checkpoint.py`` for the configured precision profile
  (dtype, weight-only precision, int8 KV cache) and tensor/pipeline parallelism.
* :func:`trtllm_build_command`: argv of ``trtllm-build`` with the configured limits (tokens) and plugins.
* :func:`run_streamed`: run one of them in its own session; its merged stdout/stderr is appended, line
  by line and redacted, to the build log; the last :data:`TAIL_LINES` lines come back for diagnostics.
  The process group is killed after the timeout (seconds).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from .config import PRECISION_PROFILES, DemoConfig
from .redact import Redactor

#: lines of a tool's output kept for the result and the diagnostics file.
TAIL_LINES = 60


def convert_command(cfg: DemoConfig, model_dir: str, ckpt_dir: Path) -> list[str]:
    """argv of convert_checkpoint.py for the configured precision and parallelism."""
    b = cfg.build
    dtype, weight_only = PRECISION_PROFILES[cfg.precision.profile]
    script = b.convert_script if os.sep in b.convert_script else (shutil.which(b.convert_script) or b.convert_script)
    cmd = [
        b.python or sys.executable,
        script,
        "--model_dir",
        model_dir,
        "--output_dir",
        str(ckpt_dir),
        "--dtype",
        dtype,
        "--tp_size",
        str(b.tensor_parallelism),
        "--pp_size",
        str(b.pipeline_parallelism),
    ]
    if weight_only:
        cmd += ["--use_weight_only", "--weight_only_precision", weight_only]
    if cfg.precision.kv_cache_dtype == "int8":  # calibrated in convert_checkpoint.py (config.py checks the runtime)
        cmd.append("--int8_kv_cache")
    return cmd + list(b.extra_convert_args)


def trtllm_build_command(cfg: DemoConfig, ckpt_dir: Path, engine_dir: Path) -> list[str]:
    """argv of trtllm-build with the configured limits (tokens) and plugins."""
    b = cfg.build
    cmd = [
        b.trtllm_build,
        "--checkpoint_dir",
        str(ckpt_dir),
        "--output_dir",
        str(engine_dir),
        "--gemm_plugin",
        b.gemm_plugin,
        "--max_batch_size",
        str(b.max_batch_size),
        "--max_input_len",
        str(b.max_input_len),
        "--max_seq_len",
        str(b.max_seq_len),
        "--max_num_tokens",
        str(b.max_num_tokens),
        "--max_beam_width",
        str(b.max_beam_width),
        "--kv_cache_type",
        b.kv_cache_type,
    ]
    return cmd + list(b.extra_build_args)


def run_streamed(cmd: list[str], log_path: Path, redactor: Redactor, timeout_s: float, label: str) -> dict[str, Any]:
    """Run ``cmd``; append its merged output, redacted, to ``log_path``; return exit code, tail, timing.

    A process still running after ``timeout_s`` seconds is killed (``timed_out: True``). A program that
    cannot be started gives ``returncode: 127`` and the OS error in the tail.
    """
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    start = time.monotonic()
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"### {label}: {redactor.redact(' '.join(cmd))}\n")
        log.flush()
        try:
            proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                bufsize=1,
                start_new_session=True,
            )
        except OSError as exc:
            line = redactor.redact(f"cannot start {cmd[0]}: {exc}")
            log.write(line + "\n")
            return {"returncode": 127, "timed_out": False, "duration_s": 0.0, "tail": [line]}
        expired = threading.Event()

        def kill_group() -> None:  # the tools spawn workers (MPI); end the whole session
            expired.set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout_s, kill_group)
        timer.start()
        try:
            for raw in proc.stdout:
                line = redactor.redact(raw.rstrip("\n"))
                log.write(line + "\n")
                log.flush()
                tail.append(line)
            returncode = proc.wait()
        finally:
            timer.cancel()
        timed_out = expired.is_set()
        log.write(f"### {label}: exit {returncode} after {time.monotonic() - start:.1f} s\n")
    return {
        "returncode": returncode,
        "timed_out": timed_out,
        "duration_s": round(time.monotonic() - start, 3),
        "tail": list(tail),
    }
