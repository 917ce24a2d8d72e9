"""Insights: what the trained space says about the data — suspected mislabels, near-duplicates and leaks, outliers,
what training did to one batch's triplets — and the exports."""

import streamlit as st

from ui import insights, state, widgets

state.require_app(__file__)

st.title("Insights")
run = widgets.active_run()
if run is None:
    st.stop()

found = insights.findings(run)
tabs = st.tabs(["Suspected mislabels", "Duplicates and leaks", "Outliers", "Triplets before and after", "Export"])
with tabs[0]:
    insights.mislabels(run, found)
with tabs[1]:
    insights.duplicates(run, found)
with tabs[2]:
    insights.outliers(run, found)
with tabs[3]:
    insights.triplets(run)
with tabs[4]:
    insights.exports(run)
