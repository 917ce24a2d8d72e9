"""Where all of a map's points lie, as one small image: drawn beneath a map that can only send a sample of them.

A million points cannot all go to the browser (6 bytes each, and WebGL then draws them for every pan), but a
count per pixel of all of them can: a 512 x 512 image is tens of kB at any gallery size, built in tens of
milliseconds with ``np.bincount``. Shaded by the logarithm of the count, so that a sparse region the sample
happened to miss still shows next to a dense class.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

BINS = 512  # image side in pixels: about the map's width on a screen
SHADE = (70, 70, 90)  # grey-blue beneath the coloured points; the count sets its opacity
MIN_ALPHA = 40  # opacity (of 255) of a pixel that holds one point: a lone point still shows
MAX_ALPHA = 150  # the densest pixel's opacity: the points drawn on top stay readable
LEVELS = 16  # steps of opacity between the two


def counts(xy: np.ndarray, extent: float, bins: int = BINS) -> np.ndarray:
    """(bins, bins) int64 point counts of ``xy`` (N, 2) over the square [0, extent]^2; row 0 is the top (the
    highest y), as an image is stored. Points outside the square are left out."""
    xy = np.asarray(xy, np.float32)  # float32 throughout: a million points in a few ms per step
    cx, cy = (np.floor(xy[:, i] * np.float32(bins / extent)).astype(np.int32) for i in (0, 1))
    np.minimum(cx, bins - 1, out=cx, where=cx == bins)  # the far edge belongs to the last cell
    np.minimum(cy, bins - 1, out=cy, where=cy == bins)
    ok = (cx >= 0) & (cx < bins) & (cy >= 0) & (cy < bins)
    flat = (bins - 1 - cy[ok]) * bins + cx[ok]
    return np.bincount(flat, minlength=bins * bins).reshape(bins, bins)


def density_png(xy: np.ndarray, extent: float, bins: int = BINS) -> bytes:
    """A PNG of where the points of ``xy`` (N, 2) lie in [0, extent]^2: transparent where there are none, a
    shade whose opacity grows with log(count) elsewhere, in ``LEVELS`` steps (a palette image: 50 kB for a
    million points where 8-bit opacity took 130 kB)."""
    n = counts(xy, extent, bins)
    level = np.log1p(n) / max(np.log1p(n.max()), 1e-9)  # (bins, bins) in [0, 1]
    index = np.where(n > 0, 1 + np.round(level * (LEVELS - 1)), 0).astype(np.uint8)  # 0: no point
    image = Image.fromarray(index, "P")
    image.putpalette(list(SHADE) * (LEVELS + 1))
    alpha = bytes([0] + [round(MIN_ALPHA + (MAX_ALPHA - MIN_ALPHA) * i / (LEVELS - 1)) for i in range(LEVELS)])
    buf = io.BytesIO()
    image.save(buf, format="PNG", transparency=alpha)
    return buf.getvalue()


def density_layer(xy: np.ndarray, extent: float, bins: int = BINS) -> dict:
    """A Plotly layout image of ``density_png`` placed over the square [0, extent]^2 of the axes, beneath the
    points (``layer="below"``): it is not a trace, so the traces' numbering, which selections name, is kept."""
    uri = "data:image/png;base64," + base64.b64encode(density_png(xy, extent, bins)).decode()
    return dict(
        source=uri,
        xref="x",
        yref="y",
        x=0,
        y=extent,
        sizex=extent,
        sizey=extent,
        xanchor="left",
        yanchor="top",
        sizing="stretch",
        layer="below",
        name="density",
    )
