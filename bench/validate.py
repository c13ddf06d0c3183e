"""What checking a policy at load costs: the Kubernetes schema check beside the rest of `check_source`.

    .venv/bin/python bench/validate.py

Prints, for each example policy, the median time of the whole load-time check of its file and of
the schema check alone (`check_spec`), the first-use cost of one Kubernetes minor's schema (reading
the file, building the validators), and the size of the shipped schema data. A policy is checked
when its file or ConfigMap key is loaded or edited, never per pod.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.sources.documents import check_source, load_documents  # noqa: E402
from app.sources.kubeschema import SCHEMAS, check_spec, shipped_versions  # noqa: E402

ROUNDS = 200


def median_ms(call: Callable[[], object], rounds: int = ROUNDS) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def first_use_ms(minor: str) -> float:
    """A fresh interpreter: the first check against `minor` minus an import-only run."""
    script = (
        "import time; from app.sources.kubeschema import check_spec; t = time.perf_counter(); "
        f"check_spec({{'sidecars': [{{'name': 'a', 'image': 'b'}}]}}, kubernetes_version='{minor}'); "
        "print((time.perf_counter() - t) * 1000)"
    )
    runs = [
        float(
            subprocess.run(
                [sys.executable, "-c", script], cwd=ROOT, check=True, capture_output=True, text=True
            ).stdout
        )
        for _ in range(5)
    ]
    return statistics.median(runs)


def main() -> None:
    sys.stdout.write(f"{'policy file':<28} {'whole check':>12} {'schema check':>13}\n")
    for path in sorted((ROOT / "examples" / "policies").glob("*.yaml")):
        text = path.read_text()
        [document] = load_documents(text, max_bytes=1 << 20)
        assert isinstance(document, dict)
        spec = document["spec"]
        check_spec(spec, kubernetes_version="1.29")  # warm
        whole = median_ms(lambda: check_source(path.name, text, max_bytes=1 << 20))  # noqa: B023
        schema = median_ms(lambda: check_spec(spec, kubernetes_version="1.29"))  # noqa: B023
        sys.stdout.write(f"{path.name:<28} {whole:>9.2f} ms {schema:>10.2f} ms\n")
    versions = shipped_versions()
    for minor in (versions[0], versions[-1]):
        sys.stdout.write(
            f"first check against Kubernetes {minor} in a process: {first_use_ms(minor):.1f} ms\n"
        )
    files = sorted(SCHEMAS.glob("v*.json"))
    sizes = [path.stat().st_size / 1024 for path in files]
    sys.stdout.write(
        f"schema data: {len(files)} files ({versions[0]} to {versions[-1]}), {sum(sizes):.0f} KiB "
        f"({min(sizes):.0f} to {max(sizes):.0f} KiB each)\n"
    )


if __name__ == "__main__":
    main()
