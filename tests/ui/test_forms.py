"""Settings are described once: a field added to a config dataclass appears as a CLI flag and a Train-page
widget with the same help and range, without touching either."""

from dataclasses import make_dataclass

import pytest
from streamlit.testing.v1 import AppTest

from embedder.cli.args import _Parser, add_settings
from embedder.config import TrainConfig
from embedder.settings import setting


def _extended():
    fancy = ("fancy_knob", int, setting(3, "how fancy the knob is", low=1, high=9, label="Fancy knob"))
    return make_dataclass("Extended", [fancy], bases=(TrainConfig,))


def test_a_new_field_becomes_a_cli_flag_with_its_help_and_range(capsys):
    parser = _Parser(prog="x")
    add_settings(parser, _extended())
    assert parser.parse_args(["--fancy-knob", "7"]).fancy_knob == 7
    assert parser.parse_args([]).fancy_knob == 3
    parser.print_help()
    assert "how fancy the knob is (default: 3) [in [1, 9]]" in " ".join(capsys.readouterr().out.split())
    cfg = _extended()(fancy_knob=12)
    with pytest.raises(Exception, match=r"--fancy-knob must be in \[1, 9\], got 12"):
        cfg.validate()


def _form_script():
    from dataclasses import make_dataclass

    import streamlit as st

    from embedder.config import TrainConfig
    from embedder.settings import setting
    from ui import forms

    fancy = ("fancy_knob", int, setting(3, "how fancy the knob is", low=1, high=9, label="Fancy knob"))
    Extended = make_dataclass("Extended", [fancy], bases=(TrainConfig,))
    with st.form("f"):
        values = forms.config_form(Extended, key_prefix="t_")
        st.form_submit_button("go")
    st.session_state["values"] = values


def test_a_new_field_becomes_a_train_page_widget_with_its_help_and_range():
    at = AppTest.from_function(_form_script).run()
    assert not at.exception
    knob = at.number_input(key="t_fancy_knob")
    assert (knob.label, knob.value, knob.min, knob.max, knob.help) == ("Fancy knob", 3, 1, 9, "how fancy the knob is")
    knob.set_value(8)
    at.button[0].click().run()
    values = at.session_state["values"]
    assert values["fancy_knob"] == 8
    TrainConfig(**{k: v for k, v in values.items() if k != "fancy_knob"}).validate()  # every other value is valid


def test_the_train_page_offers_every_setting_the_cli_has_except_the_folders():
    from embedder.settings import settings_of

    at = AppTest.from_function(_form_script).run()
    kinds = ("number_input", "selectbox", "checkbox", "text_input")  # text_input: the label file (--labels)
    offered = {w.key[2:] for kind in kinds for w in at.get(kind) if w.key}
    described = {f.name for f, s in settings_of(TrainConfig)}
    assert offered | {"data", "out", "queries", "resume", "overwrite"} == described | {"fancy_knob"}


def _walk(node):
    """``node`` and everything inside it, in the order the page shows them."""
    yield node
    for child in getattr(node, "children", {}).values():
        yield from _walk(child)


def test_more_settings__each_stage_under_its_heading_in_stage_order():
    from dataclasses import fields

    from embedder.config import STAGES

    at = AppTest.from_function(_form_script).run()
    (more,) = [e for e in at.expander if e.label == "More settings"]
    under, heading = {}, None
    for n in _walk(more):
        if type(n).__name__ == "Markdown":
            heading = n.value.strip("*")
            under[heading] = []
        elif getattr(n, "key", None):
            under[heading].append(n.key[2:])
    stage_of = {f.name: stage.title for stage in STAGES for f in fields(stage)}
    assert list(under) == [*(stage.title for stage in STAGES), "Other"]  # a field of no stage comes last
    for title, keys in under.items():
        assert keys and all(stage_of.get(key, "Other") == title for key in keys), (title, keys)
    assert under["Other"] == ["fancy_knob"] and "n_trees" in under["Index"]
