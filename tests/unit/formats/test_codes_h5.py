"""repshift.codes_h5: exact round trips, layout (dtypes, chunking, compression), provenance, storage size."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from repshift.formats import codes_h5
from repshift.sae.codes import SparseCodes


def synthetic_codes(rng, n, d_sae, mean_l0, zero_rows=()):
    """Random canonical codes with ~mean_l0 active latents per token (some tokens all zero)."""
    l0_N = rng.integers(int(0.8 * mean_l0), int(1.2 * mean_l0) + 1, size=n)
    l0_N[list(zero_rows)] = 0
    indices = np.concatenate(
        [np.sort(rng.choice(d_sae, size=k, replace=False)) for k in l0_N] + [np.zeros(0, np.int64)]
    )
    values = rng.exponential(2.0, size=indices.size).astype(np.float32) + 1e-3
    offsets = np.concatenate([[0], np.cumsum(l0_N)])
    return SparseCodes(indices, values, offsets, d_sae)


def assert_codes_equal(a: SparseCodes, b: SparseCodes) -> None:
    assert a.d_sae == b.d_sae
    for name in ("indices", "values", "offsets"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        np.testing.assert_array_equal(x, y, err_msg=name)


@pytest.fixture
def codes():
    return synthetic_codes(np.random.default_rng(0), 300, 1000, 20, zero_rows=(0, 5, 299))


def test_round_trip_exact_float32(codes, tmp_path):
    ex_off = np.array([0, 10, 10, 120, 300])
    pooled = np.random.default_rng(1).random((4, 1000)).astype(np.float32)
    attrs = {"model": "demo-llm", "layer": 3, "sae": {"id": "demo-sae", "d_sae": 1000}, "tags": ["a", "b"]}
    path = codes_h5.write_codes(
        tmp_path / "c.h5", codes, example_offsets_N1=ex_off, pooled_NF=pooled, attrs=attrs
    )
    back, meta = codes_h5.read_codes(path)
    assert_codes_equal(back, codes)
    np.testing.assert_array_equal(meta["example_offsets_N1"], ex_off)
    assert meta["example_offsets_N1"].dtype == np.int64
    np.testing.assert_array_equal(meta["pooled_NF"], pooled)
    prov = meta["attrs"].pop("provenance")
    assert meta["attrs"] == attrs
    assert {"created", "versions", "config_hash", "layer_convention"} <= set(prov)
    assert codes_h5.read_attrs(path)["layer"] == 3
    assert codes_h5.read_codes(path, load_pooled=False)[1]["pooled_NF"] is None
    assert list(tmp_path.iterdir()) == [path]  # no temporary left behind


def test_layout_dtypes_chunks_compression(codes, tmp_path):
    path = codes_h5.write_codes(
        tmp_path / "c.h5", codes, example_offsets_N1=np.array([0, 300]), attrs={"layer": 3}, compression="lzf"
    )
    with h5py.File(path, "r") as f:
        assert f["indices"].dtype == np.uint16  # d_sae 1000 <= 65536
        assert f["values"].dtype == np.float32
        assert f["offsets"].dtype == np.int64
        for name in ("indices", "values", "offsets", "example_offsets"):
            assert f[name].chunks is not None and f[name].compression == "lzf", name
        assert f.attrs["format"] == codes_h5.FORMAT_NAME and f.attrs["d_sae"] == 1000
        assert f.attrs["nnz"] == codes.nnz and f.attrs["layer"] == 3  # scalars readable without repshift
        assert "pooled" not in f
    wide = SparseCodes(np.array([0, 69_999]), np.array([1.0, 2.0]), np.array([0, 1, 2]), 70_000)
    path = codes_h5.write_codes(tmp_path / "wide.h5", wide, example_offsets_N1=np.array([0, 2]), attrs={})
    with h5py.File(path, "r") as f:
        assert f["indices"].dtype == np.int32 and f["values"].compression == "gzip"
    assert_codes_equal(codes_h5.read_codes(path)[0], wide)


def test_float16_values(codes, tmp_path):
    exact16 = SparseCodes(codes.indices, codes.values.astype(np.float16), codes.offsets, codes.d_sae)
    path = codes_h5.write_codes(
        tmp_path / "c.h5", exact16, example_offsets_N1=np.array([0, 300]), attrs={}, values_dtype="float16"
    )
    with h5py.File(path, "r") as f:
        assert f["values"].dtype == np.float16
    assert_codes_equal(codes_h5.read_codes(path)[0], exact16)  # exact for float16-representable values
    too_big = SparseCodes(np.array([1]), np.array([1e6]), np.array([0, 1]), 4)
    with pytest.raises(ValueError, match="overflow float16"):
        codes_h5.write_codes(
            tmp_path / "big.h5",
            too_big,
            example_offsets_N1=np.array([0, 1]),
            attrs={},
            values_dtype="float16",
        )
    assert not (tmp_path / "big.h5").exists()


def test_empty_and_all_zero_codes(tmp_path):
    for n in (0, 5):
        zero = SparseCodes.from_dense(np.zeros((n, 16), np.float32))
        path = codes_h5.write_codes(
            tmp_path / f"z{n}.h5", zero, example_offsets_N1=np.array([0, n]), attrs={}
        )
        back, _ = codes_h5.read_codes(path)
        assert_codes_equal(back, zero)
        assert back.n_tokens == n


def test_write_rejects_bad_inputs(codes, tmp_path):
    with pytest.raises(ValueError, match="n_tokens=300"):
        codes_h5.write_codes(tmp_path / "c.h5", codes, example_offsets_N1=np.array([0, 299]), attrs={})
    with pytest.raises(ValueError, match=r"pooled_NF must have shape \(1, 1000\)"):
        codes_h5.write_codes(
            tmp_path / "c.h5", codes, example_offsets_N1=np.array([0, 300]), pooled_NF=np.zeros((2, 1000))
        )
    with pytest.raises(TypeError, match="JSON"):
        codes_h5.write_codes(
            tmp_path / "c.h5", codes, example_offsets_N1=np.array([0, 300]), attrs={"x": object()}
        )
    assert not list(tmp_path.iterdir())
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = [1]
    with pytest.raises(ValueError, match="not a repshift sparse-codes file"):
        codes_h5.read_codes(tmp_path / "other.h5")


def test_sparse_storage_is_at_most_ten_percent_of_dense_float16(tmp_path):
    """Gemma Scope scale: 16k latents, L0 ~ 100."""
    rng = np.random.default_rng(2)
    codes = synthetic_codes(rng, 2000, 16384, 100)
    raw = codes_h5.raw_bytes_per_token(100, 16384, values_dtype="float32")
    assert raw["dense"] == 2 * 16384 and raw["sparse"] == 100 * (2 + 4) + 8
    assert raw["ratio"] <= 0.10
    for values_dtype in ("float16", "float32"):
        path = codes_h5.write_codes(
            tmp_path / f"{values_dtype}.h5",
            codes,
            example_offsets_N1=np.arange(0, 2001, 20),
            attrs={},
            values_dtype=values_dtype,
        )
        size = codes_h5.storage_bytes_per_token(path)
        assert size["dense_float16"] == 2 * 16384
        assert size["mean_l0"] == pytest.approx(100, rel=0.02)
        assert size["raw_ratio"] <= 0.10, size
        assert size["file_ratio"] <= 0.10, size
