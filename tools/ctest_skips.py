#!/usr/bin/env python3
"""Lists the tests ctest ran that skipped, with the reason each gave, from ctest's JUnit report
(`ctest --output-junit FILE`), and fails when a CPU test skipped.

A test skips either in ctest's eyes (SKIP_RETURN_CODE / SKIP_REGULAR_EXPRESSION: status "notrun")
or inside GoogleTest (GTEST_SKIP prints "[  SKIPPED ]" while ctest counts it as passed): both are
found. A skip is a GPU skip when its reason says a GPU or CUDA device is absent (or present, for the
emulator's tests); CI machines have no GPU, so those are listed and allowed. Any other skip means a
CPU check did not run for lack of something (data, a package): listed with its reason, exit 1.

  ctest_skips.py JUNIT.xml      # exit 0: no CPU test skipped; 1: some did; 2: no report
"""
import re
import sys
import xml.etree.ElementTree as ET

GPU_REASON = re.compile(r"no GPU|GPU is (present|registered)|no CUDA (device|backend)|CUDA allocator is registered")


def reason_of(output):
    lines = output.splitlines()
    # GoogleTest: "file:line: Skipped" then the message, then "[  SKIPPED ] name".
    for i, line in enumerate(lines):
        if line.rstrip().endswith(": Skipped") or line.strip() == "Skipped":
            msg = []
            for nxt in lines[i + 1:]:
                if nxt.startswith("[  SKIPPED ]") or nxt.startswith("[       OK ]"):
                    break
                if nxt.strip():
                    msg.append(nxt.strip())
            if msg:
                return " ".join(msg)
    for line in lines:  # scripts: "SKIPPED: ..." or "...; skipping (...)"
        if line.startswith("SKIPPED:") or "skipping" in line:
            return line.strip()
    tail = [l.strip() for l in lines if l.strip()]
    return tail[-1] if tail else "(no reason printed)"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    try:
        root = ET.parse(sys.argv[1]).getroot()
    except (OSError, ET.ParseError) as e:
        print(f"ctest_skips: cannot read ctest's JUnit report {sys.argv[1]}: {e}", file=sys.stderr)
        return 2
    gpu, cpu = [], []
    for case in root.iter("testcase"):
        out = "".join(case.find("system-out").itertext()) if case.find("system-out") is not None else ""
        status = case.get("status", "")
        skipped = status in ("notrun", "skipped") or case.find("skipped") is not None or "[  SKIPPED ]" in out
        if not skipped or status == "disabled":
            continue
        name = case.get("name", "?")
        reason = reason_of(out)
        (gpu if GPU_REASON.search(reason) else cpu).append((name, reason))
    if gpu:
        print(f"GPU tests skipped (no GPU here): {len(gpu)}, e.g. {gpu[0][0]}: {gpu[0][1]}")
    if cpu:
        print(f"CPU tests skipped: {len(cpu)} — these checks did NOT run:")
        for name, reason in cpu:
            print(f"  {name}: {reason}")
        return 1
    print("CPU tests skipped: none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
