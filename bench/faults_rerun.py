"""Rerun issue 9's faults 1 and 2 many times and count the outcomes (for its closing note).

1. A full disk: `npdlrm predict -o pred.h5` and `npdlrm train --save-model ck.h5` on a
   small tmpfs filled to leave 4-80 KB (a different amount each try), over a previous
   output; every other try without the free-space check that comes before a write (the
   reservation meets the full disk then). Counted: clean failures (exit 2 with the one line, no traceback, no crash),
   previous file intact (byte for byte), partial files left, exit codes.
2. Ctrl-C (SIGINT) during the save of a big checkpoint (about 256 MB), sent when the
   partial file holds 1 MB to 200 MB. Counted: runs stopped (exit 130), previous
   checkpoint intact, partial files left, exit codes.

Needs root (to mount the tmpfs) for part 1. Usage: python bench/faults_rerun.py [--tries 20]
"""
import argparse
import collections
import os
import signal
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, ROOT)

import test_faults_disk as disk  # noqa: E402
import test_faults_signals as sig  # noqa: E402


def leaves(tries):
    """Free bytes to leave in each try: 4 KB to 80 KB."""
    return [4096 + (80 - 4) * 1024 * i // max(tries - 1, 1) for i in range(tries)]


def outcome(rc, stderr):
    lines = [line for line in stderr.splitlines() if line.strip()]
    return rc == 2 and len(lines) == 1 and bool(disk.DISK_FULL.fullmatch(lines[0]))


def disk_full(tries, work):
    mnt = os.path.join(work, "disk")
    os.mkdir(mnt)
    why = disk.mount_tmpfs(mnt)
    if why:
        print(f"case 1 skipped: {why}")
        return
    try:
        data, ck = disk.make_predict_inputs(work)
        pred = os.path.join(mnt, "pred.h5")
        predict = ["predict", "--load-model", ck, "--processed-data-file", data, "-o", pred]
        save = os.path.join(mnt, "ck.h5")
        cases = {"predict -o pred.h5": (pred, predict),
                 "train --save-model ck.h5": (save, ["train", *disk.SMALL, "--log-file", "",
                                                     "--save-model", save])}
        for name, (target, args) in cases.items():
            counts, codes = collections.Counter(), collections.Counter()
            for i, leave in enumerate(leaves(tries)):
                disk.fill(mnt, 1 << 30)  # empty the filler: room for the previous output
                rc, _, err = disk.npdlrm(*args, cwd=mnt)
                assert rc == 0, err
                before = disk.read(target)
                disk.fill(mnt, leave)
                seeded = ["--numpy-rand-seed", str(10 + i)] if args[0] == "train" else []
                # odd tries: without the free-space check before the write, so that the
                # reservation (fallocate) is what meets the full disk
                rc, _, err = disk.npdlrm(*args, *seeded, cwd=mnt, precheck=i % 2 == 0)
                codes[rc] += 1
                counts["clean failure"] += outcome(rc, err)
                counts["old file intact"] += disk.read(target) == before
                counts["crashed (signal)"] += rc < 0
                counts["traceback"] += "Traceback" in err
            counts["partials left at the end"] = len(disk.partials(mnt))
            print(f"case 1, {name}, {tries} tries leaving 4-80 KB free: "
                  + ", ".join(f"{k} {v}" for k, v in counts.items())
                  + f"; exit codes {dict(sorted(codes.items()))}")
    finally:
        disk.unmount(mnt)


def ctrl_c(tries, work):
    folder = os.path.join(work, "sig")
    os.mkdir(folder)
    ck = os.path.join(folder, "ck.h5")
    proc = sig.start_train(ck, sig.BIG, 1, folder)
    _, err = proc.communicate()
    assert proc.returncode == 0, err
    before = sig.digest(ck)
    counts, codes = collections.Counter(), collections.Counter()
    for i in range(tries):
        written = (1 << 20) + (199 << 20) * i // max(tries - 1, 1)
        rc, out, err, sent = sig.signal_during_save(ck, signal.SIGINT, seed=2 + i,
                                                    written=written)
        codes[rc] += 1
        counts["signal sent during the save"] += sent
        counts["stopped (130)"] += rc == 130
        counts["ignored (ran on)"] += rc == 0
        counts["old checkpoint intact"] += sig.digest(ck) == before
        counts["'Exception ignored'"] += "Exception ignored" in err
    counts["partials left at the end"] = len(sig.partials(folder))
    print(f"case 2, Ctrl-C during a 256 MB save, {tries} tries (sent at 1-200 MB written): "
          + ", ".join(f"{k} {v}" for k, v in counts.items())
          + f"; exit codes {dict(sorted(codes.items()))}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tries", type=int, default=20)
    p.add_argument("--case", choices=["1", "2", "all"], default="all")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as work:
        if args.case in ("1", "all"):
            disk_full(args.tries, work)
        if args.case in ("2", "all"):
            ctrl_c(args.tries, work)


if __name__ == "__main__":
    main()
