"""The reproduction table on tiny hand-made TSVs: the matching value is found, filtered and reduced; a missing
quantity stays empty and says so."""

from repshift.figures.reproduction import Published, reproduction_table, write_reproduction_table


def test_values_are_filtered_and_reduced(tmp_path):
    d = tmp_path / "sae_features" / "a" / "m"
    d.mkdir(parents=True)
    (d / "layer-6.probe.tsv").write_text(
        "features\tmetric\ttrain_fraction\tmean\n"
        "sum\tmacro_f1\t0.5\t0.40\n"
        "top5\tmacro_f1\t0.5\t0.52\n"
        "top5\taccuracy\t0.5\t0.90\n"
        "top5\tmacro_f1\t0.1\t0.70\n"
    )
    pubs = [
        Published("s", "f1", "0.49", "sae_features/a/*/layer-6.probe.tsv", {"metric": "macro_f1", "train_fraction": 0.5}),
        Published("s", "f1 mean", "x", "sae_features/a/*/layer-6.probe.tsv", {"metric": "macro_f1"}, reduce="mean"),
        Published("s", "absent", "0.77", "sae/none/layer-12.shift.tsv", note="bug"),
    ]  # fmt: skip
    df = reproduction_table(tmp_path, pubs)
    assert list(df.columns) == ["study", "quantity", "published", "repshift", "where", "note"]
    assert df["repshift"].tolist() == ["0.520", "0.540", ""]  # max of 0.40/0.52; mean of 0.40, 0.52, 0.70
    assert df.loc[2, "note"] == "bug; not computed in this run"


def test_shipped_table_writes_every_published_number(tmp_path):
    df = write_reproduction_table(tmp_path, tmp_path / "reproduction.tsv")
    assert (tmp_path / "reproduction.tsv").read_text().startswith("study\tquantity\tpublished\trepshift")
    assert "0.49" in set(df["published"]) and (df["repshift"] == "").all()
