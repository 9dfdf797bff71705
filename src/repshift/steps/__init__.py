"""One function per workflow rule: plain dicts of paths and values in, files out.

Each step is what a thin ``workflow_scripts/<rule>.py`` runs through :func:`repshift.runtime.run_rule`, what
``repshift step <name>`` runs from the command line, and what ``tests/rules`` calls directly. Steps hold no
science: they read inputs, call the tested modules, and write outputs atomically with provenance. One module per
stage (``steps.data``, ``steps.activations``, ``steps.sae``, ``steps.probes``, ``steps.figures``); every step is
re-exported here, so ``from repshift.steps import train_probe`` and ``step_hash("train_probe")`` work unchanged.
"""

from repshift.steps import activations, data, figures, probes, sae, sae_features
from repshift.steps._base import STEPS, layer_file, step

globals().update(STEPS)
for _module in (data, activations, sae, probes, figures, sae_features):
    globals().update(
        {
            k: v
            for k, v in vars(_module).items()
            if callable(v) and getattr(v, "__module__", "") == _module.__name__
        }
    )

__all__ = ["STEPS", "layer_file", "step", *sorted(STEPS)]
