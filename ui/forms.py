"""Widgets made from a config dataclass's field descriptions (embedder.settings.Setting), so the Train page offers
exactly the settings the CLI has, with the same help, ranges and choices, grouped by stage as ``--help`` groups
its flags."""

from __future__ import annotations

import streamlit as st

from embedder.settings import Setting, default_of, field_type, groups_of, settings_of

TRI_STATE = {"auto": None, "yes": True, "no": False}  # a bool that may be left unset


def widget(where, cls, name: str, s: Setting, default, key: str):
    """One widget for field ``name`` of ``cls`` in container ``where``; returns the value as the field wants it."""
    label, kind = s.label or name.replace("_", " ").capitalize(), field_type(cls, name)
    if s.choices:
        return where.selectbox(label, s.choices, index=list(s.choices).index(default), key=key, help=s.help)
    if kind is bool and default is None:
        choice = where.selectbox(label, list(TRI_STATE), key=key, help=s.help)
        return TRI_STATE[choice]
    if kind is bool:
        return where.checkbox(label, default, key=key, help=s.help)
    if kind is str:
        return where.text_input(label, default, key=key, help=s.help, placeholder="default")
    if kind is int:
        return where.number_input(
            label,
            min_value=None if s.low is None else int(s.low),
            max_value=None if s.high is None else int(s.high),
            value=default,
            step=1,
            key=key,
            help=s.help,
            placeholder="auto",
        )
    high = s.high if s.high is not None else (s.below - 1e-6 if s.below is not None else None)
    small = default is not None and 0 < default < 0.01
    return where.number_input(
        label,
        min_value=s.low,
        max_value=high,
        value=default,
        step=s.step,
        format="%.6f" if small else "%.3f",
        key=key,
        help=s.help,
        placeholder="auto",
    )


def config_form(cls, key_prefix: str, columns: int = 4) -> dict:
    """Every field of ``cls`` the app offers (``Setting.app``): the main ones in a row, the rest under
    "More settings", stage by stage under each stage's heading (``groups_of``). Returns {field name: value}; call
    it inside an ``st.form``."""
    values = {}
    main = [(f, s) for f, s in settings_of(cls) if s.app and s.main]
    _rows(cls, main, key_prefix, columns, values)
    with st.expander("More settings"):
        groups = groups_of(cls)
        for group in groups:
            rest = [(f, s) for f, s in group.settings if s.app and not s.main]
            if rest and len(groups) > 1:  # a config of stages: each under its heading
                st.markdown(f"**{group.title or 'Other'}**", help=group.about)
            _rows(cls, rest, key_prefix, columns, values)
    return values


def _rows(cls, shown: list, key_prefix: str, columns: int, values: dict) -> None:
    """The widgets of ``shown`` ((field, Setting) pairs) in rows of ``columns``; their values into ``values``."""
    for start in range(0, len(shown), columns):
        for cell, (f, s) in zip(st.columns(columns), shown[start : start + columns]):
            values[f.name] = widget(cell, cls, f.name, s, default_of(f), f"{key_prefix}{f.name}")
