"""embedder/cli/lines.py: progress for a log file, a line per stage and a few while a long one runs."""

import io

from embedder.cli.lines import ProgressLines


class Clock:
    """Seconds that pass only when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _run(total: int, seconds_per_item: float) -> list[str]:
    out, clock = io.StringIO(), Clock()
    lines = ProgressLines(total, "embed: the gallery", out, clock=clock)
    for _ in range(total):
        clock.now += seconds_per_item
        lines.update(1)
    lines.close()
    lines.close()  # a second close says nothing more
    return out.getvalue().splitlines()


def test_lines__a_quick_stage_is_one_line_with_its_count_and_time():
    assert _run(100, 0.01) == ["embed: the gallery: 100/100 (100%) in 00:01"]


def test_lines__a_long_stage_says_how_far_and_how_long_left_every_tenth_no_more_often_than_every_5_s():
    said = _run(1000, 0.125)  # 125 s: a line at each tenth (12.5 s apart), and the end's
    assert len(said) == 10 and said[-1] == "embed: the gallery: 1000/1000 (100%) in 02:05"
    assert said[0] == "embed: the gallery: 100/1000 (10%) after 00:12, about 01:52 left"
    assert all("\r" not in line for line in said)


def test_lines__a_stage_that_moves_slowly_still_gets_a_line_every_half_minute():
    said = _run(100, 4.0)  # a tenth takes 40 s: a line once 30 s have passed (at 32 s, 64 s, ...), and the end's
    assert len(said) == 13 and said[0] == "embed: the gallery: 8/100 (8%) after 00:32, about 06:08 left"
    said = _run(1000, 0.001)  # a tenth every 0.1 s: at most a line every 5 s, so only the end
    assert said == ["embed: the gallery: 1000/1000 (100%) in 00:01"]


def test_lines__a_stage_without_a_total_counts_and_the_postfix_follows():
    out, clock = io.StringIO(), Clock()
    lines = ProgressLines(0, "epoch 3", out, clock=clock)
    lines.set_postfix(loss="0.1234", refresh=False)
    clock.now += 31
    lines.update(7)
    lines.close()
    assert out.getvalue().splitlines() == ["epoch 3: 7 after 00:31, loss=0.1234"] * 2
