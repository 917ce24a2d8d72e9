"""embedder/errors.py: one error type for what the user can fix, and ``one_line`` for names from outside."""

from __future__ import annotations

import pytest

from embedder.errors import Cancelled, EmbedderError, one_line


@pytest.mark.parametrize(
    "text, line",
    [
        ("cat/1.png", "cat/1.png"),
        ("a\nb.png", "a\\nb.png"),  # a file may be named like this: it must not start a second line
        ("tab\there", "tab\\there"),
        ("nul\x00", "nul\\x00"),
        ("esc\x1b[31mred", "esc\\x1b[31mred"),  # no terminal colours from a file name
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("café 猫.jpg", "café 猫.jpg"),  # printable letters of any script stay
        ("", ""),
    ],
)
def test_one_line__control_characters_are_escaped_and_letters_kept(text, line):
    assert one_line(text) == line


def test_one_line__cut_to_the_width_with_an_ellipsis():
    assert one_line("x" * 200) == "x" * 200  # exactly the width: untouched
    assert one_line("x" * 201) == "x" * 199 + "…"
    assert len(one_line("y" * 65536)) == 200
    assert one_line("abcdef", width=4) == "abc…"
    assert one_line("\n" * 10, width=5) == "\\n\\n…"  # cut after escaping: the line stays within the width


def test_cancelled_is_a_user_error():
    assert issubclass(Cancelled, EmbedderError)


def test_unreadable_image__is_a_user_error_that_carries_its_reason():
    import pytest

    from embedder.errors import EmbedderError, UnreadableImage
    from embedder.images.data import load_image

    with pytest.raises(UnreadableImage) as info:
        load_image(b"%PDF-1.4 not an image")
    assert isinstance(info.value, EmbedderError) and info.value.reason == "not an image"
    assert str(info.value) == "not a readable image (not an image)"
