"""embedder/maps/density.py: the image of where all of a map's points lie, drawn beneath a sampled map."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from embedder.maps.density import counts, density_layer, density_png


def test_counts__hand_placed_points_land_in_their_cells_top_row_is_the_highest_y():
    xy = np.array([[0, 0], [0.5, 0.5], [3.9, 3.9], [4, 4], [2.1, 0.2], [5, 1], [-0.1, 1]])
    n = counts(xy, extent=4, bins=4)
    expected = np.zeros((4, 4), int)
    expected[3, 0] = 2  # (0, 0) and (0.5, 0.5): the bottom-left cell, drawn in the last row
    expected[0, 3] = 2  # (3.9, 3.9) and the far corner (4, 4)
    expected[3, 2] = 1  # (2.1, 0.2)
    assert n.tolist() == expected.tolist()  # (5, 1) and (-0.1, 1) lie outside: left out


def test_density_png__opaque_exactly_where_points_are_denser_is_more_opaque():
    xy = np.array([[0.5, 0.5]] * 50 + [[2.5, 2.5]] + [[3.5, 0.5]] * 3)
    alpha = np.asarray(Image.open(io.BytesIO(density_png(xy, 4, bins=4))).convert("RGBA"))[..., 3]
    assert (alpha > 0).tolist() == (counts(xy, 4, bins=4) > 0).tolist()
    assert alpha[3, 0] > alpha[3, 3] > alpha[1, 2] > 0  # 50 points > 3 > 1


def test_density_layer__spans_the_square_beneath_the_points():
    layer = density_layer(np.array([[1.0, 1.0], [9.0, 2.0]]), 10, bins=8)
    assert (layer["x"], layer["y"], layer["sizex"], layer["sizey"]) == (0, 10, 10, 10)
    assert layer["layer"] == "below" and layer["xanchor"] == "left" and layer["yanchor"] == "top"
    png = base64.b64decode(layer["source"].removeprefix("data:image/png;base64,"))
    assert Image.open(io.BytesIO(png)).size == (8, 8)
