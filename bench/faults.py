"""Fault table: runs the tests that break things for real and prints, per fault, what
was done, the outcome and the data lost. Each test asserts its "no data lost" condition itself
(exact step counts, exact row sets, verified checksums, 100 % success afterwards).

    python bench/faults.py            # runs the fault tests with pytest (real Ray, DeepSpeed, Serve)
    python bench/faults.py --also tests/integration/test_distill.py   # plus other tests, same session
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import REPO, machine, table  # noqa: E402

FAULTS = [  # (pytest node id, fault, what the test does, "data lost" when it passes)
    ("tests/integration/test_distill.py::test_killed_worker_resumes_from_checkpoint",
     "train worker killed", "SIGKILL one of 2 DeepSpeed workers (PID from Ray's state API) mid-run",
     "none: resumed from the last checkpoint, final step count = planned"),
    ("tests/integration/test_multinode.py::test_train_workers_on_separate_nodes_survive_losing_one",
     "train worker node lost (3-node cluster)", "remove the worker node running a train worker (raylet, object store, "
     "workers killed) after the first registered checkpoint; add a replacement node",
     "none: resumed from the last checkpoint on the replacement, final step count = planned, report.json resumes >= 1"),
    ("tests/integration/test_multinode.py::test_teacher_node_lost_mid_precompute_gives_the_exact_row_set",
     "teacher actor node lost (3-node cluster)", "remove the worker node of a teacher actor once it has finished a "
     "block, before the shard dir is complete (its actors paused from the first shard on); add a replacement node",
     "none: Ray Data restarted the actor and redid its blocks; ids 0..511 exactly once, every sha256 matches the manifest"),
    ("tests/integration/test_precompute.py::test_killed_midway_resumes_to_the_exact_row_set",
     "precompute killed; shards corrupted", "SIGKILL the driver after 3 shards; then flip a bit in one shard and truncate another",
     "none: rerun computes only missing/damaged rows; ids exactly once; checksums match"),
    ("tests/integration/test_distill.py::test_zero3_from_the_same_shards_and_foreign_shards_refused",
     "shards from another teacher / max_length", "train from a shard dir made for other inputs",
     "none: refused with the reason, before training"),
    ("tests/unit/test_shards.py", "corrupt / partial / overlapping shard files", "bit flips, truncation, temp files, overlaps",
     "none: detected by sha256 and removed or refused"),
    ("tests/integration/test_serve_faults.py::test_killed_replica_is_retried_comes_back_and_then_all_succeed",
     "Serve replica killed", "SIGKILL 1 of 2 model replicas under load (8 clients)", "none: in-flight requests resent to the live replica (0 errors); replaced; then 100/100 succeed"),
    ("tests/integration/test_multinode.py::test_serve_replica_node_lost_under_load",
     "Serve replica node lost (3-node cluster)", "2 model replicas, one per worker node, 2 clients through the head's "
     "proxy (no client retries); remove one replica's node, then add a node",
     "none: 0 failed requests; one replica served until the node came back, then 2 again"),
    ("tests/integration/test_serve_faults.py::test_hostile_requests_get_4xx_while_valid_traffic_flows",
     "hostile HTTP", "10 MB body, 200k-deep JSON, 10,000 texts, slow client, 200 dropped connections",
     "none: each 4xx or dropped; concurrent valid requests all 200"),
    ("tests/integration/test_serve.py", "bad requests", "13 malformed requests, unknown path, wrong method",
     "none: 4xx + JSON each; next valid request succeeds"),
    ("tests/unit/test_bad_configs.py", "bad configs (21)", "unknown key, wrong type, T<=0, alphas, layers, files, workers, ...",
     "none: exit 2, one line naming field and fix, nothing written"),
    ("tests/unit/test_data.py", "bad data", "BOM, CRLF, quoted tabs, non-UTF-8, blank lines, no trailing newline, 1 MB text, unknown labels",
     "none: parsed, or an error with file and line"),
    ("tests/unit/test_security.py", "security defaults", "loopback binds, custom model code, run names escaping the output dir",
     "none"),
]

# what "recovered" means in a row that records recover_s
RECOVERED = {
    "tests/integration/test_multinode.py::test_teacher_node_lost_mid_precompute_gives_the_exact_row_set":
        "shard dir complete",
    "tests/integration/test_multinode.py::test_train_workers_on_separate_nodes_survive_losing_one":
        "new worker group up",
    "tests/integration/test_multinode.py::test_serve_replica_node_lost_under_load":
        "2 replicas serving again (node added back included)",
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--also", nargs="*", default=[], help="more pytest node ids to run in the same session "
                   "(sharing its fixtures); counted below the table")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "faults.xml"
        t0 = time.time()
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}",
                        "-o", "junit_family=xunit1",  # keeps record_property's values in the XML
                        *dict.fromkeys([*(f[0] for f in FAULTS), *args.also])], cwd=REPO)
        wall = time.time() - t0
        cases = ET.parse(xml).getroot().iter("testcase")
        results: dict[str, list[str]] = {}
        props: dict[str, dict[str, str]] = {}  # what a test recorded (record_property), e.g. recover_s
        for c in cases:
            node = c.get("classname", "").replace(".", "/") + ".py::" + c.get("name", "")
            state = "fail" if c.find("failure") is not None or c.find("error") is not None else (
                "skip" if c.find("skipped") is not None else "pass")
            results.setdefault(node, []).append(state)
            props[node] = {p.get("name"): p.get("value") for p in c.iter("property")}
    rows = []
    for node, fault, done, lost in FAULTS:
        states = [s for k, v in results.items() if k.startswith(node.split("::")[0]) and
                  ("::" not in node or k.split("::")[1].split("[")[0] == node.split("::")[1]) for s in v]
        outcome = ("FAILED" if "fail" in states else "passed" if "pass" in states else "skipped") + f" ({len(states)} test(s))"
        found = props.get(node, {})
        if "killed_after_s" in found:
            outcome += f", killed at {float(found['killed_after_s']):.0f} s"
        if "recover_s" in found:
            outcome += f", {RECOVERED.get(node, 'recovered')} {float(found['recover_s']):.0f} s later"
        rows.append((fault, done, outcome, lost if outcome.startswith("passed") else "see the test output"))
    print(f"\nbench/faults.py on {machine()} in {wall:.0f}s\n")
    print(table(rows, ("fault", "what was done", "outcome", "data lost")))
    every = [s for v in results.values() for s in v]
    print(f"\nall tests in the session: {every.count('pass')} passed, {every.count('fail')} failed, "
          f"{every.count('skip')} skipped")
    return 0 if all(r[2].startswith("passed") for r in rows) and "fail" not in every else 1


if __name__ == "__main__":
    sys.exit(main())
