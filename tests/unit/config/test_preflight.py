"""Preflight of the hub repos the real config needs, offline, against a temporary HF_HOME (run in a fresh
interpreter so that huggingface_hub reads that HF_HOME)."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

from repshift.config.preflight import needed_files

ROOT = Path(__file__).resolve().parents[3]
REPOS = ("google/gemma-2-2b", "google/paligemma2-3b-pt-224", "google/gemma-scope-2b-pt-res")
CHECK = (
    "import yaml, sys; from repshift.config.checks import validate_config; "
    "from repshift.config.preflight import preflight_hub; "
    f"c = yaml.safe_load(open({str(ROOT / 'config.yaml')!r})); "
    f"validate_config(c, {str(ROOT / 'rules/config.schema.yaml')!r}); preflight_hub(c); print('PASSED')"
)


def _run(hf_home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    env.pop("TRANSFORMERS_OFFLINE", None)
    return subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=300)


def _cache(hf_home: Path, repo: str, files: list[str]) -> None:
    """Lay files out as huggingface_hub's cache does (refs/main -> snapshots/<commit>/...)."""
    folder = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    for f in files:
        path = folder / "snapshots" / commit / f
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")


def test_the_real_config_needs_the_models_and_26_gemma_scope_layers():
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    need = needed_files(cfg)
    assert set(need) == set(REPOS)
    assert need["google/gemma-2-2b"] == ["config.json"]
    scope = need["google/gemma-scope-2b-pt-res"]
    assert len(scope) == 26 and all(f.endswith("/params.npz") for f in scope)
    assert "layer_12/width_16k/average_l0_82/params.npz" in scope  # canonical id resolved by sae-lens


def test_offline_and_uncached_is_one_message_naming_every_repo(tmp_path):
    proc = _run(tmp_path)
    assert proc.returncode != 0 and "PASSED" not in proc.stdout
    err = proc.stderr.strip().splitlines()
    message = "\n".join(err[err.index(next(x for x in err if "preflight:" in x)) :])
    assert "3 hub repo(s) this run needs are unavailable (HF_HUB_OFFLINE is set" in message
    for repo in REPOS:
        assert f"  {repo}: " in message
    assert "26 file(s) not in the local HF cache" in message and "make demo" in message


def test_everything_cached_passes_without_asking_the_hub(tmp_path):
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    need = needed_files(cfg)
    for repo, files in need.items():
        _cache(tmp_path, repo, files)
    proc = _run(tmp_path)
    assert proc.stdout.strip() == "PASSED", proc.stderr[-3000:]
    # one SAE layer missing: only that repo is named
    (
        tmp_path
        / "hub/models--google--gemma-scope-2b-pt-res/snapshots"
        / ("0" * 40)
        / need["google/gemma-scope-2b-pt-res"][0]
    ).unlink()
    proc = _run(tmp_path)
    assert "1 hub repo(s)" in proc.stderr and "google/gemma-scope-2b-pt-res: 1 file(s)" in proc.stderr


def test_sae_files_follow_the_release_format_and_skip_unknown_ones():
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    from repshift.config.preflight import _sae_files

    directory = get_pretrained_saes_directory()
    assert _sae_files(directory["gemma-scope-2b-pt-res-canonical"]) == ("params.npz",)
    assert _sae_files(directory["gemma-2b-res-jb"]) == ("cfg.json", "sae_weights.safetensors")
    # Llama Scope's loader reads other files: nothing is guessed (a wrong name would read as "missing")
    assert directory["llama_scope_lxa_8x"].conversion_func == "llama_scope"
    assert _sae_files(directory["llama_scope_lxa_8x"]) == ()
