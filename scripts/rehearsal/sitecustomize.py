"""Imported at start-up by every Python process of the rehearsal (run.sh puts this folder on PYTHONPATH).

When ``REPSHIFT_STANDIN_SAE_SHAPE=release=d_in,d_sae`` is set, sae-lens's pretrained loader builds that release's
SAEs with the stand-in widths (see repshift.demo.standin). The hook runs after sae_lens's directory module is
imported, so processes that never load an SAE pay nothing.
"""

import importlib.abc
import importlib.util
import os
import sys

_TARGET = "sae_lens.loading.pretrained_saes_directory"


class _AfterImport(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != _TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        exec_module = spec.loader.exec_module

        def exec_and_override(module):
            exec_module(module)
            from repshift.demo.standin import install_sae_shape_override_from_env

            install_sae_shape_override_from_env()

        spec.loader.exec_module = exec_and_override
        return spec


if os.environ.get("REPSHIFT_STANDIN_SAE_SHAPE"):
    sys.meta_path.insert(0, _AfterImport())
