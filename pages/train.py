"""Train: pick data and settings, train in the background with live curves, see what mined triplets look like."""

import time
from pathlib import Path

import streamlit as st

from embedder.config import TrainConfig
from embedder.errors import EmbedderError
from embedder.verbs.import_model import ImportConfig
from ui import access, forms, state, training, uploads, widgets

state.require_app(__file__)

st.title("Train")
st.caption("Training runs in the background: switch pages, query the current run in another tab, come back.")

JOB = "train_job"  # session_state: output folder of the job this session started

source = st.radio(
    "Data",
    training.SOURCES,
    horizontal=True,
    key="train_source",
    help="An image folder has one sub-folder per label: <root>/<label>/<image>",
)
folder = upload = None
if source == "Folder on the server":
    folder = st.text_input(
        "Image folder",
        placeholder="data/my-photos  (holding cat/, dog/, …)",
        key="train_folder",
        help="Inside the folders this server shares (data/ by default)",
    )
elif source == "Upload a .zip":
    upload = st.file_uploader(
        "A .zip of class folders",
        type=["zip"],
        key="train_zip",
        help=f"cat/1.jpg, dog/2.jpg, … (one wrapper folder around them is fine); up to {uploads.limit_mb()} MB",
    )

network = st.radio(
    "Network",
    training.NETWORKS,
    horizontal=True,
    key="train_network",
    help="Train an embedder here, or bring one you trained elsewhere (Keras, PyTorch, …) exported to ONNX",
)
model = None
if network == training.NETWORKS[1]:
    model = st.file_uploader(
        "Your embedder as an .onnx file",
        type=["onnx"],
        key="train_onnx",
        help="Run with onnxruntime only (no custom operators); its input size and layout are read from the graph. "
        f"Up to {uploads.limit_mb()} MB",
    )

# The settings' widgets are made from the config's field descriptions: the same help and ranges as the CLI.
with st.form("train_form"):
    name = st.text_input(
        "Run name",
        value=time.strftime("run-%Y%m%d-%H%M"),
        key="train_name",
        help="Saved as runs/<name>; an existing run of that name is replaced when training "
        "succeeds, unless someone has it open",
    )
    if network == training.NETWORKS[1]:
        form = forms.config_form(ImportConfig, key_prefix="import_")
    else:
        form = forms.config_form(TrainConfig, key_prefix="train_")
    submitted = st.form_submit_button(
        "Import" if network == training.NETWORKS[1] else "Train",
        type="primary",
        icon=":material/play_arrow:",
        key="train_submit",
    )

if submitted:
    try:
        images = training.TrainingImages(source, folder, upload)
        st.session_state[JOB] = str(training.start(images, name, form, network, model).out)
    except EmbedderError as exc:
        st.error(access.public(str(exc)))

if st.session_state.get(JOB):
    st.subheader(f"Training {Path(st.session_state[JOB]).name}")
    widgets.job_panel(Path(st.session_state[JOB]))
widgets.other_jobs(st.session_state.get(JOB))
widgets.skipped_files(state.active_run_path())

st.subheader("What the model learns from: triplets")
training.triplet_gallery()
