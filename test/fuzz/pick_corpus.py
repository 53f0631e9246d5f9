#!/usr/bin/env python3
"""
pick_corpus: add to a checked-in fuzz corpus the inputs of a fuzzing run
that reach edges the corpus does not, at most LIMIT files in all.

    test/fuzz/pick_corpus.py ./build-fuzz/bin/fuzz_gzip test/fuzz/corpus/fuzz_gzip /tmp/fuzz/fuzz_gzip [LIMIT]

libFuzzer's -merge=1 keeps every input that adds a feature (an edge, or a
new hit count on one), which for the door is well over a thousand files.
This keeps the corpus small: first -merge=1 into a scratch dir (the
feature-minimal candidates), then one merge run per candidate to read the
whole set of edges it covers (the COV line of -merge_control_file), then a
greedy set cover: the checked-in files stay, and the candidate adding the
most uncovered edges (the smaller on a tie) is copied in, until every edge
is covered or the corpus holds LIMIT files (default 199). Prints the edges
covered. Run it with `nice -n 19`; it takes about 0.1 s per candidate.
"""

import os
import shutil
import subprocess
import sys
import tempfile


def edges_of(fuzzer, path, tmp):
    """The edge indices path covers, from a merge run of its own."""
    one, empty = os.path.join(tmp, "one"), os.path.join(tmp, "empty")
    for d in (one, empty):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    shutil.copy(path, one)
    control = os.path.join(tmp, "control")
    if os.path.exists(control):
        os.unlink(control)
    subprocess.run([fuzzer, "-merge=1", "-merge_control_file=" + control, empty, one],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    edges = set()
    with open(control) as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] == "COV":
                edges.update(int(x) for x in parts[2:])
    return edges


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    fuzzer, corpus, run = sys.argv[1:4]
    limit = int(sys.argv[4]) if len(sys.argv) == 5 else 199
    with tempfile.TemporaryDirectory(prefix="pick-corpus-") as tmp:
        cand_dir = os.path.join(tmp, "candidates")
        os.makedirs(cand_dir)
        subprocess.run([fuzzer, "-merge=1", cand_dir, run],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        checked = sorted(os.listdir(corpus))
        covered = set()
        for name in checked:
            covered |= edges_of(fuzzer, os.path.join(corpus, name), tmp)
        cands = {}
        for name in os.listdir(cand_dir):
            if name not in checked:
                p = os.path.join(cand_dir, name)
                cands[p] = edges_of(fuzzer, p, tmp)
        reachable = covered.union(*cands.values())
        count, added = len(checked), 0
        while count < limit and cands:
            best = max(cands, key=lambda p: (len(cands[p] - covered), -os.path.getsize(p)))
            if not cands[best] - covered:
                break
            covered |= cands.pop(best)
            shutil.copy(best, corpus)
            count += 1
            added += 1
    print("%s: %d files (%d added), %d of %d edges covered"
          % (corpus, count, added, len(covered), len(reachable)))


if __name__ == "__main__":
    main()
