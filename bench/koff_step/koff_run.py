#!/usr/bin/env python3
"""One timed round of koff's KOFF step: runs `koff offload` for N steps and prints ONE JSON line.

    koff_run.py KOFF_BINARY OUT_DIR WARMUP -- <koff offload arguments...>

tokens/s comes from OUT_DIR/metrics.jsonl: the trainer logs after every step k the cumulative
tokens_per_s = k * B * T / elapsed_k (elapsed from just before the first step), so elapsed_k =
k * B * T / tokens_per_s, and the timed figure is (N - WARMUP) * B * T / (elapsed_N - elapsed_WARMUP):
the first WARMUP steps are excluded, and so is everything before the first step (model load,
tokenisation) and after the last (checkpoint, final mask, export, evaluation).

As soon as the last step is logged, the process gets SIGTERM: koff finishes the checkpoint it is
writing and exits (130) without exporting or evaluating. Peak memory: VmHWM of the process read from
/proc at that moment (the high-water mark of training), and ru_maxrss from wait4 at its exit (the same
figure plus whatever the final checkpoint added; /usr/bin/time -v reports the latter).
"""
import json
import os
import signal
import subprocess
import sys
import time


def vm_hwm_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def main():
    koff, out, warmup = sys.argv[1], sys.argv[2], int(sys.argv[3])
    args = sys.argv[sys.argv.index("--") + 1:]
    steps = int(args[args.index("--steps") + 1])
    tok = int(args[args.index("--batch") + 1]) * int(args[args.index("--seq") + 1])
    metrics = os.path.join(out, "metrics.jsonl")
    log = open(os.path.join(os.path.dirname(out.rstrip("/")) or ".", os.path.basename(out.rstrip("/")) + ".log"), "w")
    t_start = time.perf_counter()
    proc = subprocess.Popen([koff, "offload", *args, "--out", out, "--force-new"], stdout=log, stderr=subprocess.STDOUT)
    rows, hwm, signalled = {}, None, False

    def read_metrics():
        if os.path.exists(metrics):
            with open(metrics) as f:
                for line in f:
                    if line.endswith("\n"):
                        r = json.loads(line)
                        if r.get("phase") == "mask":
                            rows[r["step"]] = r

    while True:
        read_metrics()
        if not signalled and steps in rows:
            hwm = vm_hwm_kb(proc.pid)
            proc.send_signal(signal.SIGTERM)
            signalled = True
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)  # reaps it here, keeping its rusage
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            break
        time.sleep(0.05)
    read_metrics()
    maxrss = ru.ru_maxrss
    wall = time.perf_counter() - t_start
    if steps not in rows:
        log.close()
        sys.exit(f"koff_run.py: koff offload exited ({proc.returncode}) before step {steps}; see {log.name}")
    elapsed = {k: k * tok / rows[k]["tokens_per_s"] for k in rows}
    step_ms = [round((elapsed[k] - elapsed.get(k - 1, 0.0)) * 1e3, 1) for k in range(1, steps + 1)]
    timed = elapsed[steps] - (elapsed[warmup] if warmup > 0 else 0.0)
    print(json.dumps({"engine": "koff", "tokens_per_step": tok, "steps": steps, "warmup": warmup,
                      "tokens_per_s": (steps - warmup) * tok / timed, "step_ms": step_ms,
                      "peak_rss_kb": hwm if hwm is not None else maxrss, "ru_maxrss_kb": maxrss,
                      "exit": proc.returncode, "wall_s": round(wall, 1), "log": log.name}), flush=True)


if __name__ == "__main__":
    main()
