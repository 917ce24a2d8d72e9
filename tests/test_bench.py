"""The CI-quick benchmark run: it writes the generated tables into BENCHMARKS.md and keeps what is around them."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_run_all_quick__writes_the_tables_and_the_figure_between_the_markers(tmp_path):
    from bench.run_all import BEGIN, END

    (tmp_path / "BENCHMARKS.md").write_text(f"# Mine\n\nhand-written\n\n{BEGIN}\nold numbers\n{END}\n\nafter\n")
    done = subprocess.run(
        [sys.executable, "-m", "bench.run_all", "--quick", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert text.startswith("# Mine\n\nhand-written\n\n") and text.rstrip().endswith("after")
    assert "old numbers" not in text and text.count(BEGIN) == 1
    for heading in ("### kNN: 10,000 gallery items", "### Embedding throughput", "### Query latency", "### Projection",
                    "### Training time-to-quality"):  # fmt: skip
        assert heading in text
    assert "### A million points on the map (100,000 points" in text and "| (c) embedding-atlas component" in text
    assert "Serving memory at 10,000 items" in text and "peak RSS **" in text
    assert "| recipe (P×K + miner) |" in text and "| naive (random triplets) |" in text
    assert "| exact numpy, 1 query | 1.000 |" in text and "The product (`build_index`" in text
    assert "### Sharded index: 20,000 gallery items in 4 shards" in text and "| 4 shards, search_k" in text
    assert (tmp_path / "docs/knn_recall_qps.png").read_bytes()[:4] == b"\x89PNG"
