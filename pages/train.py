"""Train: pick data and settings, train in the background with live curves, see what mined triplets look like."""

import time
from pathlib import Path

import streamlit as st

from embedder.config import BACKBONES, DEVICES, MINERS, TrainConfig
from embedder.errors import EmbedderError
from ui import access, jobs, state, training, uploads, widgets

state.require_app(__file__)

st.title("Train")
st.caption("Training runs in the background: switch pages, query the current run in another tab, come back.")

JOB = "train_job"  # session_state: output folder of the job this session started
d = TrainConfig()

source = st.radio("Data", training.SOURCES, horizontal=True, key="train_source",
                  help="An image folder has one sub-folder per label: <root>/<label>/<image>")
folder = upload = None
if source == "Folder on the server":
    folder = st.text_input("Image folder", placeholder="data/my-photos  (holding cat/, dog/, …)", key="train_folder",
                           help="Inside the folders this server shares (data/ by default)")
elif source == "Upload a .zip":
    upload = st.file_uploader("A .zip of class folders", type=["zip"], key="train_zip",
                              help=f"cat/1.jpg, dog/2.jpg, … (one wrapper folder around them is fine); "
                                   f"up to {uploads.limit_mb()} MB")

# Keyed by TrainConfig field name: training.config reads the form as the widgets return it.
with st.form("train_form"):
    c = st.columns(4)
    form = dict(
        name=c[0].text_input("Run name", value=time.strftime("run-%Y%m%d-%H%M"), key="train_name",
                             help="Saved as runs/<name>; an existing run of that name is replaced when training "
                                  "succeeds, unless someone has it open"),
        epochs=c[1].number_input("Epochs (max)", 1, 500, d.epochs, key="train_epochs",
                                 help="Early stopping usually ends sooner"),
        backbone=c[2].selectbox("Backbone", BACKBONES, key="train_backbone", help="auto: a small convnet for tiny "
                                "images, EfficientNet-Lite0 (ImageNet-pretrained) for photos"),
        miner=c[3].selectbox("Triplet miner", MINERS, key="train_miner",
                             help="Which triplets of a batch the loss learns from"),
    )
    with st.expander("More settings"):
        a = st.columns(4)
        form["dim"] = a[0].number_input("Embedding size", 2, 2048, d.dim, key="train_dim")
        form["image_size"] = a[1].number_input("Image size (0 = auto)", 0, 1024, 0, key="train_image_size",
                                               help="32 for tiny images, 224 for photos")
        form["margin"] = a[2].number_input("Margin", 0.01, 2.0, d.margin, step=0.05, key="train_margin",
                                           help="Triplet margin, in L2 distance")
        form["pretrained"] = a[3].selectbox("Pretrained weights", ["auto", "require", "off"], key="train_pretrained")
        b = st.columns(4)
        form["classes_per_batch"] = b[0].number_input("Classes per batch (P)", 2, 256, d.classes_per_batch,
                                                      key="train_classes_per_batch")
        form["per_class"] = b[1].number_input("Images per class (K)", 2, 64, d.per_class, key="train_per_class")
        form["lr"] = b[2].number_input("Learning rate", 1e-6, 1.0, d.lr, format="%.5f", key="train_lr")
        form["backbone_lr"] = b[3].number_input("Backbone learning rate", 0.0, 1.0, d.backbone_lr, format="%.5f",
                                                key="train_backbone_lr")
        e = st.columns(4)
        form["patience"] = e[0].number_input("Patience (epochs)", 1, 100, d.patience, key="train_patience")
        form["test_fraction"] = e[1].number_input("Held-out test share", 0.0, 0.8, d.test_fraction, step=0.05,
                                                  key="train_test_fraction")
        form["val_fraction"] = e[2].number_input("Validation share", 0.0, 0.8, d.val_fraction, step=0.05,
                                                 key="train_val_fraction")
        form["weight_decay"] = e[3].number_input("Weight decay", 0.0, 1.0, d.weight_decay, format="%.5f",
                                                 key="train_weight_decay")
        f = st.columns(4)
        form["n_trees"] = f[0].number_input("Annoy trees", 1, 500, d.n_trees, key="train_n_trees")
        form["seed"] = f[1].number_input("Seed", 0, 2**31 - 1, d.seed, key="train_seed")
        form["device"] = f[2].selectbox("Device", DEVICES, key="train_device")
        form["freeze_bn"] = f[3].checkbox("Freeze BatchNorm", d.freeze_bn, key="train_freeze_bn",
                                          help="Keep a pretrained backbone's statistics")
        g = st.columns(4)
        form["freeze_fraction"] = g[0].number_input(
            "Frozen share of the backbone", 0.0, 1.0, d.freeze_fraction, step=0.05, key="train_freeze_fraction",
            help="Leading stages of a pretrained backbone that stay as they are")
        form["unseen_classes"] = g[1].selectbox(
            "Classes never trained on", ["auto", "0", "0.1", "0.2", "0.3"], key="train_unseen_classes",
            help="Held out to validate and test retrieval of new classes; auto: 20% from 20 classes up")
        form["target_precision"] = g[2].number_input(
            '"Unknown" target precision', 0.5, 1.0, d.target_precision, step=0.01, key="train_target_precision",
            help="Answers within the calibrated distance are right this often")
    submitted = st.form_submit_button("Train", type="primary", icon=":material/play_arrow:", key="train_submit")

if submitted:
    try:
        st.session_state[JOB] = str(training.start(source, folder, upload, form).out)
    except EmbedderError as exc:
        st.error(access.public(str(exc)))

if st.session_state.get(JOB):
    st.subheader(f"Training {Path(st.session_state[JOB]).name}")
    widgets.job_panel(Path(st.session_state[JOB]))
others = [j for j in jobs.registry().all() if j.active and str(j.out) != st.session_state.get(JOB)]
for job in others:
    st.caption(f"Also {'training' if job.running else 'waiting to train'}: **{job.out.name}** — "
               + (job.describe() if job.running else "queued"))
widgets.skipped_files(state.active_run_path())

st.subheader("What the model learns from: triplets")
training.triplet_gallery()
