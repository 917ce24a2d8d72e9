"""A plain progress printer for the benchmarks that train: notes and one line an epoch, timed."""

import time

START = time.perf_counter()


def log(p) -> None:
    if p.stage in ("note", "epoch"):
        text = (
            p.message
            if p.stage == "note"
            else (
                f"epoch {p.stats.epoch}: loss {p.stats.loss:.4f} val MAP@R {p.stats.val_map_at_r:.3f} "
                f"({p.stats.seconds:.0f} s)"
            )
        )
        print(f"[{time.perf_counter() - START:5.0f} s] {text}", flush=True)
