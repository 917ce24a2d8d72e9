"""embedder/cli/args.py: the command line parsed as a user types it. Flags come from the config fields: a bool that
may be left unset has both --x and --no-x, a bool on by default is turned off with --no-x, and the help names the
layout a folder must have."""

import re
from pathlib import Path

import pytest

from embedder.cli.args import build_parser


@pytest.mark.parametrize("args, pretrained", [([], None), (["--pretrained"], True), (["--no-pretrained"], False)])
def test_train__a_bool_left_unset_has_three_states(args, pretrained):
    assert build_parser().parse_args(["train", *args]).pretrained is pretrained


def test_train__a_bool_on_by_default_is_turned_off_with_no():
    parser = build_parser()
    assert parser.parse_args(["train"]).freeze_bn is True
    assert parser.parse_args(["train", "--no-freeze-bn"]).freeze_bn is False
    assert parser.parse_args(["train", "--resume"]).resume is True


def test_help__a_no_flag_says_it_turns_the_setting_off(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--no-finetune turn off (on by default): train after the first answer" in text


def test_help__says_what_the_tool_does_and_the_folder_layout(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "<root>/<label>/<image>" in text
    assert "exit code 2" in text
    assert ".py" not in text  # no file names of ours


def test_predict__k_unset_means_the_runs_own():
    args = build_parser().parse_args(["predict", "runs/demo", "a.png", "b.png"])
    assert (args.k, args.images) == (None, ["a.png", "b.png"])


def _train_parser():
    return next(a for a in build_parser()._actions if a.dest == "command").choices["train"]


def test_docs__the_flags_it_names_first_show_the_parsers_defaults_and_choices():
    """docs/cli.md lists the train flags a user reaches for first with their default or their choices; a default
    changed in the config must not leave the page saying the old one."""
    text = " ".join((Path(__file__).parents[2] / "docs" / "cli.md").read_text().split())
    start = text.index("the ones you reach for first")
    named = re.findall(r"`(--[a-z-]+) ([^`]+)`", text[start : text.index("`--overwrite`", start)])
    flags = {o: a for a in _train_parser()._actions for o in a.option_strings}
    checked = 0
    for flag, shown in named:
        action = flags[flag]
        if "|" in shown:
            assert shown.split("|") == list(action.choices), flag
        elif re.fullmatch(r"[0-9.]+", shown):
            assert float(shown) == action.default, f"docs/cli.md shows {flag} {shown}, the default is {action.default}"
        checked += 1
    assert checked >= 6


def test_train_help__flags_grouped_under_their_stage_one_heading_each(capsys):
    from dataclasses import fields

    from embedder.config import STAGES

    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = capsys.readouterr().out
    headings = [line[:-1] for line in text.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert headings == ["options", *(stage.title for stage in STAGES)]  # one heading a stage, in stage order
    sections = dict(zip(headings, re.split(r"^\S.*:$", text, flags=re.M)[1:]))
    for stage in STAGES:
        section = sections[stage.title]
        assert " ".join(stage.__doc__.split()) in " ".join(section.split())  # the stage's line under its heading
        for f in fields(stage):
            flag = "--" + ("no-" if f.default is True else "") + f.name.replace("_", "-")
            assert re.search(rf"^  {flag}\b", section, flags=re.M), (stage.title, flag)
    assert re.search(r"^  --n-trees\b", sections["Index"], flags=re.M)
    assert not re.search(r"^  --n-trees\b", sections["Training"], flags=re.M)
