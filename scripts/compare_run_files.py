"""Compare two directories of runs (scripts/same_runs.sh) byte for byte, file by file.

For every HDF5 file under BEFORE (run.h5 and each checkpoint) the file of the same relative
path under AFTER must exist and hold the same datasets with identical bytes, dtypes and
shapes, and the same attributes, except the attributes that record the code or the moment
(``--ignore``, default: versions and times). Prints one line per file and exits 1 on any
difference, naming the first few.

    python scripts/compare_run_files.py BEFORE AFTER
"""
import argparse
import os
import sys

import h5py
import numpy as np

# what differs between two runs of the same code: the code and library versions, clocks and
# durations, the run directory (and the digest of the configuration that names it), where
# the ranks ran (/ranks, which older run files lack)
IGNORED = ("version", "time", "started", "host", "pid", "argv", "command", "wall", "elapsed",
           "seconds", "out", "attrs_blake2b", "ranks")


def ignored(name: str, patterns) -> bool:
    leaf = name.rsplit("/", 1)[-1].lower()
    return any(p in leaf for p in patterns)


def contents(path: str, patterns) -> dict:
    """{key: value} for every dataset (bytes, dtype, shape) and attribute of a file."""
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            skip = ignored(name, patterns)
            for key, value in obj.attrs.items():
                if not skip and not ignored(key, patterns):
                    out[f"{name}@{key}"] = np.asarray(value).tobytes()
            if isinstance(obj, h5py.Dataset):
                if skip:
                    return
                data = obj[()]
                out[name] = (np.asarray(data).tobytes(), str(obj.dtype), obj.shape)
        visit("/", f)
        f.visititems(visit)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--ignore", nargs="*", default=list(IGNORED),
                        help="attribute and dataset names containing any of these are skipped")
    args = parser.parse_args(argv)
    differ = 0
    files = sorted(os.path.relpath(os.path.join(d, n), args.before)
                   for d, _, names in os.walk(args.before) for n in names if n.endswith(".h5"))
    if not files:
        print(f"no HDF5 files under {args.before}", file=sys.stderr)
        return 1
    for rel in files:
        other = os.path.join(args.after, rel)
        if not os.path.exists(other):
            print(f"{rel}: missing in {args.after}")
            differ += 1
            continue
        a = contents(os.path.join(args.before, rel), args.ignore)
        b = contents(other, args.ignore)
        diff = sorted(k for k in a.keys() | b.keys() if k not in a or k not in b or a[k] != b[k])
        print(f"{rel}: {'identical' if not diff else 'DIFFERS: ' + ', '.join(diff[:12])}"
              f" ({len(a)} datasets and attributes)")
        differ += bool(diff)
    print(f"files={len(files)} differing={differ}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
