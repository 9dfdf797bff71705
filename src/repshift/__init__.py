"""repshift: measure how a language model's representations shift when it is adapted into a VLM."""

__version__ = "0.1.0"

#: The layer convention used everywhere in repshift (extraction, SAEs, probes, figures).
LAYER_CONVENTION = (
    "layer L = output of decoder block L (0-based) = HF hidden_states[L+1]; "
    "the last block is read before the final norm"
)
