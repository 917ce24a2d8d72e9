"""A real full disk for one CLI command: run as ``unshare -rm python full_disk.py MOUNT MB [--copy RUN] -- ARGS``.

Inside a private mount namespace (no root needed where user namespaces are allowed) it mounts a tmpfs of MB
megabytes at MOUNT, copies RUN into it if asked, fills what is left but ``FREE_KB``, runs ``python -m embedder
ARGS`` and prints, as JSON: its exit code, its stderr lines, and every file under MOUNT (with its SHA-256) before
and after the command. The tmpfs goes with the namespace."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

FREE_KB = 64  # what the filler leaves: less than any run file the command will write


def files(root: Path) -> dict[str, str]:
    found = {}
    for folder, dirs, names in os.walk(root):
        for name in dirs + names:
            path = Path(folder) / name
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "folder"
            found[str(path.relative_to(root))] = digest
    return found


def main() -> None:
    split = sys.argv.index("--")
    mount, megabytes, rest, args = Path(sys.argv[1]), sys.argv[2], sys.argv[3:split], sys.argv[split + 1 :]
    mount.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(mount)], check=True)
    if rest[:1] == ["--copy"]:
        shutil.copytree(rest[1], mount / "runs" / Path(rest[1]).name)
    free = shutil.disk_usage(mount).free - FREE_KB * 1024
    with open(mount / "filler", "wb") as f:
        f.write(bytes(max(0, free)))
    before = files(mount)
    done = subprocess.run([sys.executable, "-m", "embedder", *args], capture_output=True, text=True, timeout=300)
    err = [line for line in done.stderr.splitlines() if line.strip()]
    print(json.dumps({"code": done.returncode, "err": err, "before": before, "after": files(mount)}))


if __name__ == "__main__":
    main()
