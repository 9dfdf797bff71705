"""Class features and SAE-feature classification on hand-built sparse codes."""

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from repshift.figures import sae_features as figures_sae_features
from repshift.formats.activations_h5 import POSITION_KINDS
from repshift.probes.cv import ProbeSettings
from repshift.sae import class_features
from repshift.sae.codes import SparseCodes

IMG, TXT, BOS = POSITION_KINDS["image"], POSITION_KINDS["text"], POSITION_KINDS["bos"]
SETTINGS = ProbeSettings(c_grid=(0.1, 1.0), inner_folds=2, seeds=(0, 1))


def _codes(rows, d_sae):
    """SparseCodes from a list of {latent: value} dicts (one per token)."""
    dense = np.zeros((len(rows), d_sae), dtype=np.float32)
    for t, r in enumerate(rows):
        for latent, value in r.items():
            dense[t, latent] = value
    return SparseCodes.from_dense(dense)


def test_image_token_codes_keeps_only_image_tokens_of_image_rows():
    # example 0: text row (bos, 2 text); example 1: image row (2 image, bos, 1 prompt text)
    codes = _codes([{0: 9.0}, {1: 9.0}, {2: 9.0}, {3: 1.0}, {4: 2.0}, {5: 9.0}, {6: 9.0}], 8)
    index = {
        "offsets": np.array([0, 3, 7]),
        "kinds_T": np.array([BOS, TXT, TXT, IMG, IMG, BOS, TXT]),
        "modality": np.array(["text", "image"]),
        "example_id": np.array(["a", "b"]),
    }
    x = class_features.image_token_codes(codes, index)
    assert x.rows_E.tolist() == [1] and x.example_id_E.tolist() == ["b"]
    np.testing.assert_array_equal(x.offsets_E1, [0, 2])
    assert class_features.pool_sum(x).toarray().tolist() == [[0, 0, 0, 1.0, 2.0, 0, 0, 0]]


def _image_codes(token_rows, tokens_per_image, d_sae):
    codes = _codes(token_rows, d_sae)
    n = len(tokens_per_image)
    offsets = np.concatenate([[0], np.cumsum(tokens_per_image)])
    return class_features.image_token_codes(
        codes,
        {
            "offsets": offsets,
            "kinds_T": np.full(codes.n_tokens, IMG),
            "modality": np.full(n, "image"),
            "example_id": np.array([str(i) for i in range(n)]),
        },
    )


def test_topn_count_counts_each_tokens_top_n():
    # image 0: two tokens; image 1: one token. Ties go to the lower latent.
    x = _image_codes([{0: 3.0, 1: 2.0, 2: 1.0}, {1: 5.0, 2: 4.0, 3: 4.0}, {2: 1.0, 3: 1.0}], [2, 1], 5)
    np.testing.assert_array_equal(
        class_features.pool_topn_count(x, 1).toarray(), [[1, 1, 0, 0, 0], [0, 0, 1, 0, 0]]
    )
    np.testing.assert_array_equal(
        class_features.pool_topn_count(x, 2).toarray(), [[1, 2, 1, 0, 0], [0, 0, 1, 1, 0]]
    )
    np.testing.assert_array_equal(
        class_features.pool_topn_count(x, 9).toarray(), [[1, 2, 2, 1, 0], [0, 0, 1, 1, 0]]
    )
    np.testing.assert_allclose(class_features.pool_sum(x).toarray(), [[3, 7, 5, 4, 0], [0, 0, 1, 1, 0]])
    fs = class_features.feature_sets(x, top_n=[2], binarise_variants=[False, True])
    assert set(fs) == {"sum", "sum >0", "top2-count", "top2-count >0"}
    np.testing.assert_array_equal(fs["top2-count >0"].X.toarray(), [[1, 1, 1, 0, 0], [0, 0, 1, 1, 0]])
    assert all(sparse.issparse(f.X) for f in fs.values())


def test_row_top_n_ignores_inactive_entries():
    keep = class_features.row_top_n(np.array([0, 1, 2]), np.array([0.0, 2.0, -1.0]), np.array([0, 3]), 3)
    assert keep.tolist() == [False, True, False]


def test_class_features_rank_and_frequency_filter():
    # 10 images, 2 classes; latent 0 in every image's top-k (generic, 100%), latent 1 in exactly 5/10 = 0.5,
    # latent 2 in class 0 only (4 of 5), latent 3 in class 1 only (5 of 5), latent 4 in one class-0 image
    top = np.zeros((10, 6))
    top[:, 0] = 1
    top[:5, 1] = 1
    top[:4, 2] = 1
    top[5:, 3] = 1
    top[0, 4] = 1
    labels = np.array([0] * 5 + [1] * 5)
    table, dropped = class_features.class_features(
        sparse.csr_matrix(top),
        labels,
        ["cat", "dog"],
        max_image_fraction=0.5,
        n_top=3,
        neuronpedia_id="gemma-2-2b/12-gemmascope-res-16k",
    )
    assert dropped.tolist() == [0]  # 1.0 > 0.5 dropped; latent 1 at exactly 0.5 is kept
    cat = table[table["class"] == "cat"]
    assert cat["latent"].tolist() == [1, 2, 4]
    np.testing.assert_allclose(cat["frequency"], [1.0, 0.8, 0.2])
    np.testing.assert_allclose(cat["overall_frequency"], [0.5, 0.4, 0.1])
    dog = table[table["class"] == "dog"]
    assert dog["latent"].tolist() == [3] and dog["rank"].tolist() == [1]
    assert dog["neuronpedia"].iloc[0].endswith("/gemma-2-2b/12-gemmascope-res-16k/3")
    _, dropped = class_features.class_features(
        sparse.csr_matrix(top), labels, ["cat", "dog"], max_image_fraction=0.45
    )
    assert dropped.tolist() == [0, 1, 3]


def test_image_top_k_picks_largest_positive_scores():
    scores = sparse.csr_matrix(np.array([[0.0, 3.0, 1.0, 2.0], [5.0, 0.0, 0.0, 0.0]]))
    np.testing.assert_array_equal(
        class_features.image_top_k(scores, 2).toarray(), [[0, 1, 0, 1], [1, 0, 0, 0]]
    )


def test_class_features_end_to_end_from_codes():
    # each class owns one latent that fires on one of its image tokens; latent 0 fires everywhere
    rng = np.random.default_rng(0)
    token_rows, labels = [], []
    for i in range(12):
        label = i % 3
        token_rows += [{0: 5.0, 1 + label: 2.0 + rng.random()}, {0: 4.0, 7: rng.random() * 0.1}]
        labels.append(label)
    x = _image_codes(token_rows, [2] * 12, 8)
    table, dropped = class_features.class_features(
        class_features.image_top_k(class_features.pool_sum(x), 2),
        np.array(labels),
        ["a", "b", "c"],
        max_image_fraction=0.5,
    )
    assert dropped.tolist() == [0]  # in every image's top-2; each class latent is in a third of them
    top1 = table[table["rank"] == 1].set_index("class")["latent"].to_dict()
    assert top1 == {"a": 1, "b": 2, "c": 3}
    assert (table[table["rank"] == 1]["frequency"] == 1.0).all()


def test_subsample_is_stratified_deterministic_nested_and_never_leaks():
    y = np.repeat(np.arange(4), 25)
    folds = np.tile(np.arange(5), 20)
    kind, splits = class_features.classification_splits(folds)
    assert kind == "folds" and len(splits) == 5
    for k, tr, te in splits:
        prev = set()
        for f in (0.1, 0.2, 0.5, 1.0):
            a = class_features.subsample_train(tr, y, f, seed=3, fold=k)
            np.testing.assert_array_equal(a, class_features.subsample_train(tr, y, f, seed=3, fold=k))
            assert set(a) <= set(tr) and not set(a) & set(te)
            counts = np.bincount(y[a], minlength=4)
            assert (counts == counts[0]).all() and counts[0] == max(2, round(f * 20))
            assert prev <= set(a)  # nested
            prev = set(a)
    assert not np.array_equal(
        class_features.subsample_train(splits[0][1], y, 0.2, seed=0, fold=0),
        class_features.subsample_train(splits[0][1], y, 0.2, seed=1, fold=0),
    )


def test_released_split_is_used_when_present():
    split = np.array(["train"] * 8 + ["test"] * 4)
    kind, splits = class_features.classification_splits(np.zeros(12, dtype=int) + np.arange(12) % 2, split)
    assert kind == "released"
    ((_, tr, te),) = splits
    assert tr.tolist() == list(range(8)) and te.tolist() == list(range(8, 12))
    kind, splits = class_features.classification_splits(
        np.arange(12) % 3, np.array(["test"] * 12), outer_folds=2
    )
    assert kind == "folds" and [k for k, _, _ in splits] == [0, 1]


def _separable(n_per_class=10, n_classes=3, d_sae=64, seed=0):
    """Sparse codes where class c's images carry latent 10+c on one token (its largest entry there); everything
    else is noise shared by all classes."""
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for i in range(n_per_class * n_classes):
        label = i % n_classes
        for _ in range(3):
            r = {int(j): float(rng.random()) for j in rng.choice(np.arange(20, d_sae), 2, replace=False)}
            rows.append(r)
        rows[-1][10 + label] = 1.5
        labels.append(label)
    return _image_codes(rows, [3] * len(labels), d_sae), np.array(labels)


def test_separable_feature_gives_macro_f1_one_and_rows_are_tidy():
    x, y = _separable()
    folds = np.arange(y.size) % 5
    features = class_features.feature_sets(x, top_n=[1, 5])
    table = class_features.evaluate_feature_sets(
        features, y, settings=SETTINGS, train_fractions=[0.3, 1.0], folds_N=folds
    )
    assert list(table.columns) == list(class_features.ROW_COLUMNS)
    assert len(table) == len(features) * 2 * 2 * 5 * 2  # sets x fractions x seeds x folds x metrics
    full = table[(table.metric == "macro_f1") & (table.train_fraction == 1.0)]
    f1 = full.groupby("features")["value"].mean()
    # the class latent is the top entry of one token per image: every pooling separates the classes
    for name in features:
        assert f1[name] == pytest.approx(1.0), name
    assert (table["n_test"] == 6).all()
    assert set(table[table.train_fraction == 0.3]["n_train"]) == {6}  # 2 of each class's 8 training rows
    summary = class_features.summarize_rows(table)
    row = summary[
        (summary.features == "sum >0") & (summary.metric == "macro_f1") & (summary.train_fraction == 1)
    ]
    assert row["mean"].iloc[0] == pytest.approx(1.0)


def test_shuffled_labels_are_near_chance():
    x, y = _separable(n_per_class=12)
    y = np.random.default_rng(1).permutation(y)
    folds = np.arange(y.size) % 4
    features = class_features.feature_sets(x, poolings=["sum"], binarise_variants=[True])
    table = class_features.evaluate_feature_sets(
        features, y, settings=SETTINGS, train_fractions=[1.0], folds_N=folds
    )
    assert table[table.metric == "accuracy"]["value"].mean() < 0.6


def test_sparse_scaling_without_centring_equals_full_standardisation():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = _separable(n_per_class=8)
    X = class_features.pool_sum(x)
    ours = class_features.make_pipeline(0.3, max_iter=5000, scaling="std")
    full = make_pipeline(StandardScaler(), LogisticRegression(C=0.3, max_iter=5000, tol=1e-10)).fit(
        X.toarray(), y
    )
    ours.set_params(clf__tol=1e-10).fit(X, y)
    np.testing.assert_allclose(ours.predict_proba(X), full.predict_proba(X.toarray()), atol=1e-5)


def test_figure_table_matches_rows_and_plots(tmp_path):
    x, y = _separable(n_per_class=6)
    folds = np.arange(y.size) % 3
    features = class_features.feature_sets(x, top_n=[1])
    features[class_features.RAW] = class_features.FeatureSet(
        "mean", False, np.random.default_rng(0).normal(size=(y.size, 8)), "std"
    )
    rows = class_features.evaluate_feature_sets(
        features, y, settings=SETTINGS, train_fractions=[0.5, 1.0], folds_N=folds
    )
    rows = pd.concat(
        [rows.assign(analysis="an", model="m", layer=layer) for layer in (2, 5)], ignore_index=True
    )
    table = figures_sae_features.figure_table(rows)
    assert set(table["panel"]) == {"m, layer 2", "m, layer 5"}
    assert set(table["series"]) == set(features)
    for _, r in table.iterrows():
        src = rows[
            (rows.layer == r["layer"])
            & (rows.features == r["series"])
            & (rows.metric == "macro_f1")
            & (rows.train_fraction == r["train_fraction"])
        ]["value"]
        assert r["value"] == pytest.approx(src.mean())
        assert r["lo"] <= r["value"] <= r["hi"]
    figures_sae_features.plot_figure(table, out_pdf=tmp_path / "f.pdf", out_png=tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 5000


def test_global_scaling_keeps_sparsity_and_binary_features_and_beats_std_on_rare_noise():
    x, y = _separable()
    features = class_features.feature_sets(x, poolings=["sum"], binarise_variants=[False, True])
    scaler = class_features.GlobalScaler().fit(features["sum >0"].X)
    assert scaler.scale_ == 1.0
    Xs = class_features.GlobalScaler().fit_transform(features["sum"].X)
    assert sparse.issparse(Xs) and np.sqrt(np.mean(Xs.data**2)) == pytest.approx(1.0)
    folds = np.arange(y.size) % 5
    f1 = {}
    for scaling in ("global", "std"):
        fs = {k: v._replace(scaling=scaling) for k, v in features.items()}
        t = class_features.evaluate_feature_sets(
            fs, y, settings=SETTINGS, train_fractions=[1.0], folds_N=folds
        )
        f1[scaling] = t[t.metric == "macro_f1"]["value"].mean()
    assert f1["global"] == pytest.approx(1.0) and f1["std"] < 0.9


# ----------------------------------------------------------------------------------------------- config
def _demo_cfg():
    from pathlib import Path

    import yaml
    from snakemake.utils import validate

    root = Path(__file__).resolve().parents[3]
    cfg = yaml.safe_load((root / "config" / "demo.yaml").read_text())
    validate(cfg, str(root / "rules" / "config.schema.yaml"))
    return cfg, str(root / "rules" / "config.schema.yaml")


def test_demo_config_plans_one_job_per_model_and_layer_and_keeps_tokens():
    from repshift import config as rcfg

    cfg, _ = _demo_cfg()
    rcfg.check_config(cfg)
    a = cfg["sae_features"]["cifar-demo"]
    assert rcfg.sae_feature_jobs(cfg) == [
        ("cifar-demo", m, layer) for m in a["models"] for layer in a["layers"]
    ]
    for m in a["models"]:
        assert rcfg.needs_tokens(cfg, m, a["dataset"])
        assert (m, a["dataset"]) in rcfg.extraction_pairs(cfg)
    cfg["sae_features"] = {}
    assert rcfg.sae_feature_jobs(cfg) == []
    assert not rcfg.needs_tokens(cfg, a["models"][0], a["dataset"])


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda a: a.__setitem__("sae", "nope"), "unknown SAE 'nope'"),
        (lambda a: a.__setitem__("dataset", "nope"), "unknown dataset 'nope'"),
        (lambda a: a.__setitem__("models", ["nope"]), "unknown model 'nope'"),
        (lambda a: a.__setitem__("models", ["demo-llm"]), "demo-llm is a text-only model"),
        (lambda a: a.__setitem__("models", ["demo-paligemma-vision"]), "vision tower"),
        (lambda a: a.__setitem__("dataset", "prompts-original"), "has no image rows"),
        (lambda a: a.__setitem__("layers", [7]), "layer 7"),
    ],
)
def test_check_config_refuses_bad_analyses(mutate, needle):
    from repshift import config as rcfg

    cfg, _ = _demo_cfg()
    mutate(cfg["sae_features"]["cifar-demo"])
    with pytest.raises(rcfg.ConfigError, match=needle):
        rcfg.check_config(cfg)


def test_schema_rejects_a_typo_in_an_analysis():
    from snakemake.utils import validate

    cfg, schema = _demo_cfg()
    cfg["sae_features"]["cifar-demo"]["topk"] = 3
    with pytest.raises(Exception, match="topk"):
        validate(cfg, schema)
