"""Train: pick data and settings, train in the background with live curves, see what mined triplets look like."""

import time
from pathlib import Path

import streamlit as st

from embedder.config import BACKBONES, DEVICES, MINERS, TrainConfig
from embedder.errors import EmbedderError
from ui import jobs, state, training, widgets

state.require_app(__file__)

st.title("Train")
st.caption("Training runs in the background: switch pages, query the current run in another tab, come back.")

JOB = "train_job"  # session_state: output folder of the job this session started
d = TrainConfig()

source = st.radio("Data", ["Demo digits", "Folder on the server", "Upload a .zip"], horizontal=True, key="train_source",
                  help="An image folder has one sub-folder per label: <root>/<label>/<image>")
folder = upload = None
if source == "Folder on the server":
    folder = st.text_input("Image folder", placeholder="/data/my-photos  (holding cat/, dog/, …)", key="train_folder")
elif source == "Upload a .zip":
    upload = st.file_uploader("A .zip of class folders", type=["zip"], key="train_zip",
                              help="cat/1.jpg, dog/2.jpg, … (one wrapper folder around them is fine)")

with st.form("train_form"):
    c = st.columns(4)
    name = c[0].text_input("Run name", value=time.strftime("run-%Y%m%d-%H%M"), help="Saved as runs/<name>; an "
                           "existing run of that name is replaced when training succeeds")
    epochs = c[1].number_input("Epochs (max)", 1, 500, d.epochs, help="Early stopping usually ends sooner")
    backbone = c[2].selectbox("Backbone", BACKBONES, help="auto: a small convnet for tiny images, "
                              "EfficientNet-Lite0 (ImageNet-pretrained) for photos")
    miner = c[3].selectbox("Triplet miner", MINERS, help="Which triplets of a batch the loss learns from")
    with st.expander("More settings"):
        a = st.columns(4)
        dim = a[0].number_input("Embedding size", 2, 2048, d.dim)
        image_size = a[1].number_input("Image size (0 = auto)", 0, 1024, 0, help="32 for tiny images, 224 for photos")
        margin = a[2].number_input("Margin", 0.01, 2.0, d.margin, step=0.05, help="Triplet margin, in L2 distance")
        pretrained = a[3].selectbox("Pretrained weights", ["auto", "require", "off"])
        b = st.columns(4)
        classes_per_batch = b[0].number_input("Classes per batch (P)", 2, 256, d.classes_per_batch)
        per_class = b[1].number_input("Images per class (K)", 2, 64, d.per_class)
        lr = b[2].number_input("Learning rate", 1e-6, 1.0, d.lr, format="%.5f")
        backbone_lr = b[3].number_input("Backbone learning rate", 0.0, 1.0, d.backbone_lr, format="%.5f")
        e = st.columns(4)
        patience = e[0].number_input("Patience (epochs)", 1, 100, d.patience)
        test_fraction = e[1].number_input("Held-out test share", 0.0, 0.8, d.test_fraction, step=0.05)
        val_fraction = e[2].number_input("Validation share", 0.0, 0.8, d.val_fraction, step=0.05)
        weight_decay = e[3].number_input("Weight decay", 0.0, 1.0, d.weight_decay, format="%.5f")
        f = st.columns(4)
        n_trees = f[0].number_input("Annoy trees", 1, 500, d.n_trees)
        seed = f[1].number_input("Seed", 0, 2**31 - 1, d.seed)
        device = f[2].selectbox("Device", DEVICES)
        freeze_bn = f[3].checkbox("Freeze BatchNorm", d.freeze_bn, help="Keep a pretrained backbone's statistics")
        g = st.columns(4)
        freeze_fraction = g[0].number_input("Frozen share of the backbone", 0.0, 1.0, d.freeze_fraction, step=0.05,
                                            help="Leading stages of a pretrained backbone that stay as they are")
        unseen = g[1].selectbox("Classes never trained on", ["auto", "0", "0.1", "0.2", "0.3"],
                                help="Held out to validate and test retrieval of new classes; auto: 20% from 20 "
                                     "classes up")
        target_precision = g[2].number_input('"Unknown" target precision', 0.5, 1.0, d.target_precision, step=0.01,
                                             help="Answers within the calibrated distance are right this often")
    submitted = st.form_submit_button("Train", type="primary", icon=":material/play_arrow:")

if submitted:
    try:
        data = training.data_source(source, folder, upload)
        cfg = TrainConfig(
            data=data, out=str(training.out_path(name)), backbone=backbone, epochs=int(epochs), dim=int(dim),
            image_size=int(image_size) or None, margin=float(margin), miner=miner,
            pretrained={"auto": None, "require": True, "off": False}[pretrained],
            classes_per_batch=int(classes_per_batch), per_class=int(per_class), lr=float(lr),
            backbone_lr=float(backbone_lr), weight_decay=float(weight_decay), freeze_bn=freeze_bn,
            patience=int(patience), test_fraction=float(test_fraction), val_fraction=float(val_fraction),
            n_trees=int(n_trees), seed=int(seed), device=device, freeze_fraction=float(freeze_fraction),
            unseen_classes=None if unseen == "auto" else float(unseen), target_precision=float(target_precision),
        )
        cfg.validate()
        st.session_state[JOB] = str(jobs.registry().start(cfg).out)
    except EmbedderError as exc:
        st.error(str(exc))

if st.session_state.get(JOB):
    st.subheader(f"Training {Path(st.session_state[JOB]).name}")
    widgets.job_panel(Path(st.session_state[JOB]))
others = [j for j in jobs.registry().all() if j.running and str(j.out) != st.session_state.get(JOB)]
for job in others:
    st.caption(f"Also training: **{job.out.name}** — {job.describe()}")

st.subheader("What the model learns from: triplets")
training.triplet_gallery()
