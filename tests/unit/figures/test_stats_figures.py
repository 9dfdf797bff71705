"""Layer sweep: small example sets left out, n in the legend, bootstrap bounds; probe panels: the null band."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from repshift.figures.layer_sweep import NULL_SERIES, probe_rows, shift_rows, transfer_rows


def test_shift_series_below_min_examples_are_not_drawn_and_legend_shows_n():
    shift = pd.DataFrame(
        {
            "comparison": ["captions", "captions", "prompts"],
            "layer": [3, 4, 3],
            "metric": "token_cosine",
            "value": [0.9, 0.8, 0.7],
            "lo": [0.85, 0.75, 0.5],
            "hi": [0.95, 0.85, 0.9],
            "n": [600, 600, 8],
        }
    )
    rows = shift_rows(shift, min_examples=50)
    assert set(rows["series"]) == {"captions (n=600)"}  # the 8-sentence set is left out
    np.testing.assert_allclose(rows[["value", "lo", "hi"]].to_numpy(), [[0.9, 0.85, 0.95], [0.8, 0.75, 0.85]])
    assert set(shift_rows(shift, min_examples=5)["series"]) == {"captions (n=600)", "prompts (n=8)"}
    # old tables without n or bounds: drawn as before, point bounds
    old = shift_rows(shift.drop(columns=["lo", "hi", "n"]), min_examples=50)
    assert set(old["series"]) == {"captions", "prompts"} and (old["lo"] == old["value"]).all()


def test_spliced_loss_series_below_min_examples_are_not_drawn():
    transfer = pd.DataFrame(
        {
            "sae": "s",
            "model": ["m", "m"],
            "dataset": ["caps", "few"],
            "layer": 2,
            "position_kind": "text",
            "metric": "ce_loss_recovered",
            "value": [0.6, 0.4],
            "lo": [0.5, 0.1],
            "hi": [0.7, 0.8],
            "n": [600, 5],
        }
    )
    rows = transfer_rows(transfer, min_examples=50)
    assert list(rows["series"]) == ["m [caps] (n=600)"]
    assert (rows["lo"].iloc[0], rows["hi"].iloc[0]) == (0.5, 0.7)


def test_probe_panel_draws_the_permutation_null_band():
    base = {"transfer": "within", "train_model": "m", "train_modality": "text", "test_model": "m"}
    base |= {"test_modality": "text", "test_space": "same", "train_fraction": 1.0, "metric": "accuracy"}
    base |= {"layer": 1, "repeat": 0, "n_train": 30, "n_test": 10}
    # 3 permutations x 2 folds: permutation means 0.45, 0.5, 0.65
    null = [(0, 0, 0.4), (0, 1, 0.5), (1, 0, 0.5), (1, 1, 0.5), (2, 0, 0.6), (2, 1, 0.7)]
    rows = [base | {"probe": "permutation", "seed": i, "fold": k, "value": v} for i, k, v in null]
    rows += [base | {"probe": "logreg", "seed": 0, "fold": k, "value": 0.9} for k in (0, 1)]
    out = probe_rows(pd.DataFrame(rows))
    band = out[out["series"] == NULL_SERIES].iloc[0]
    # mean 1.6 / 3; 2.5% and 97.5% quantiles of [0.45, 0.5, 0.65] by linear interpolation (positions 0.05, 1.95)
    assert band["value"] == pytest.approx(1.6 / 3)
    assert band["lo"] == pytest.approx(0.45 + 0.05 * 0.05) and band["hi"] == pytest.approx(0.5 + 0.95 * 0.15)
    assert "m [text] [permutation]" not in set(out["series"])
