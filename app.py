"""The dashboard: `streamlit run app.py`. Pages live in pages/, Streamlit glue in ui/, everything else in embedder/.

On first start with no EMBEDDER_RUN set, the demo run (runs/demo) is trained in the background if it is missing;
pages show its progress until it is ready. Environment variables: ui/state.py (runs), ui/auth.py (password),
ui/access.py (which server folders a browser may name), ui/jobs.py (trainings at once).
"""

import logging
import os

import streamlit as st

from embedder.config import TrainConfig
from embedder.runs.run import is_run
from ui import auth, guard, jobs, maps, sessions, state

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
log = logging.getLogger("app")
st.set_page_config(page_title="Embedder", page_icon=":material/explore:", layout="wide")
guard.install()  # Streamlit's own state-changing requests (clear cache, uploads) wait for the password too


def ensure_demo_run() -> None:
    """Train runs/demo in the background once per server when nothing else was asked for and it is missing."""
    demo = state.demo_run_path()
    if os.environ.get(state.RUN_ENV) or is_run(demo) or jobs.registry().get(demo) is not None:
        return
    jobs.registry().start(TrainConfig(data="demo", out=str(demo)))


pages = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/query.py", title="Query", icon=":material/image_search:"),
    st.Page("pages/review.py", title="Review", icon=":material/rate_review:"),
    st.Page("pages/explore.py", title="Explore", icon=":material/scatter_plot:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/evaluate.py", title="Evaluate", icon=":material/analytics:"),
    st.Page("pages/insights.py", title="Insights", icon=":material/troubleshoot:"),
]
st.session_state[state.ENTERED] = True  # before st.navigation, which may rerun the script
allowed = auth.allowed()
# Until the password is right the page list is hidden too; a deep link keeps its page for after the password.
page = st.navigation(pages, position="sidebar" if allowed else "hidden")
if not allowed:
    auth.ask()
    st.stop()
ensure_demo_run()
maps.keep_url()
state.open_linked_run(st.session_state[maps.URL])  # before the sidebar names the active run
state.open_requested_page()
sessions.touch(state.active_run_path())
with st.sidebar:
    active = state.active_run_path()
    st.caption(f"Active run: **{active.name}**" + ("" if is_run(active) else " (not trained yet)"))
try:
    page.run()
except Exception:  # a bug: the trace goes to the server log, the browser gets one line without paths
    log.exception("page %s failed", page.title)
    st.error("Something went wrong on this page; the details are in the server log.")
