"""Model adapters: one interface over every family in :data:`repshift.models.families.FAMILIES`.

An adapter loads a model once (hub id, local folder or generated demo folder, all through the same
``from_pretrained`` path), turns manifest rows into model inputs, labels every position by kind from
token ids (never by offsets) and exposes the decoder blocks so that :mod:`repshift.extract` can read
the output of block L with forward hooks.

Text-only inputs follow the family's BOS rule (:class:`repshift.models.tokens.TextTokenizer`):
``[<bos>] + tokenizer(text, add_special_tokens=False)`` for Gemma-based families, no BOS for Qwen2/Qwen2-VL and
SmolLM2/SmolVLM, truncated to ``max_tokens``; a base LLM and its VLM decoder see the very same ids, which the
comparison stage asserts. Text-only inputs to a VLM decoder carry no ``token_type_ids`` and no pixels, so
attention is causal exactly as in the base LLM.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from repshift.config import HUB_HELP, ModelSpec
from repshift.formats.activations_h5 import POSITION_KINDS
from repshift.models.families import FAMILIES, family, resolve_path
from repshift.models.tokens import TextTokenizer

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(
            f"dtype {dtype!r} is not supported; use auto, float32 or bfloat16 (float16 overflows)"
        )
    return _DTYPES[dtype]


def _layers_at(model: torch.nn.Module, path: str | None) -> torch.nn.ModuleList | None:
    layers = resolve_path(model, path) if path else None
    return layers if isinstance(layers, torch.nn.ModuleList) else None


def decoder_layers(model: torch.nn.Module, family: str | None = None) -> torch.nn.ModuleList:
    """The decoder blocks of a causal LM or VLM (block ``L`` produces ``hidden_states[L + 1]``), at the path the
    family's row names (:mod:`repshift.models.families`); without ``family``, the first row whose path exists."""
    rows = [FAMILIES[family]] if family else list(FAMILIES.values())
    for row in rows:
        layers = _layers_at(model, row.decoder_blocks)
        if layers is not None:
            return layers
    paths = sorted({f"{r.decoder_blocks} ({r.name})" for r in rows})
    raise TypeError(
        f"cannot find the decoder blocks of a {type(model).__name__}: expected one of {', '.join(paths)}; "
        "pass the full model, not a sub-module, and check models.<name>.family in the config"
    )


def vision_layers(model: torch.nn.Module, family: str | None = None) -> torch.nn.ModuleList:
    """The encoder blocks of a VLM's vision tower: layer L = output of tower block L."""
    rows = [FAMILIES[family]] if family else [r for r in FAMILIES.values() if r.vision_blocks]
    for row in rows:
        layers = _layers_at(model, row.vision_blocks)
        if layers is not None:
            return layers
    raise TypeError(
        f"cannot find vision-tower blocks in {type(model).__name__}: expected "
        + ", ".join(sorted({f"{r.vision_blocks} ({r.name})" for r in rows if r.vision_blocks}))
    )


def _text_config(config):
    return config.get_text_config() if hasattr(config, "get_text_config") else config


@dataclass
class Batch:
    inputs: dict[str, torch.Tensor]
    kinds_BT: np.ndarray  # int8 POSITION_KINDS per position
    ids_BT: np.ndarray


class Adapter:
    """A loaded model with its tokenizer/processor."""

    def __init__(self, spec: ModelSpec, model, tokenizer, processor, device: torch.device):
        self.spec = spec
        self.model = model
        self.tokenizer = tokenizer
        self.processor = processor
        self.device = device
        self.stream = spec.stream
        self.family = family(spec.family)
        if self.stream == "vision":
            if not self.family.vision_stream:
                supported = [n for n, f in FAMILIES.items() if f.vision_stream]
                raise ValueError(
                    f"{spec.name}: the vision stream is supported for {' and '.join(supported)}, not {spec.family} "
                    "(its image-token count varies per image or its patches are merged after the tower)"
                )
            self.layers = vision_layers(model, spec.family)
            self.d_model = int(model.config.vision_config.hidden_size)
            self.vision_cls = self.family.vision_class_token  # CLIP: class token at position 0
        else:
            self.layers = decoder_layers(model, spec.family)
            self.d_model = int(_text_config(model.config).hidden_size)
            self.vision_cls = False
        self.num_layers = len(self.layers)
        if self.num_layers != spec.num_layers:
            raise ValueError(
                f"models.{spec.name}.num_layers is {spec.num_layers} but the loaded model has "
                f"{self.num_layers} {'vision-tower' if self.stream == 'vision' else 'decoder'} blocks: fix "
                "num_layers in the config"
            )
        self.text_tokenizer = TextTokenizer.for_family(tokenizer, spec.family)
        self.bos_id = tokenizer.bos_token_id if self.text_tokenizer.bos else None
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.image_token_id = next(
            (
                getattr(model.config, k)
                for k in self.family.image_token_keys
                if getattr(model.config, k, None) is not None
            ),
            None,
        )
        special = set(tokenizer.all_special_ids)
        special.discard(self.image_token_id)
        self.special_ids = np.array(sorted(special), dtype=np.int64)

    # -- inputs -------------------------------------------------------------------------------------
    def text_ids(self, text: str, max_tokens: int) -> tuple[list[int], bool]:
        """Token ids of a text-only input and whether it was truncated (see :mod:`repshift.tokens`)."""
        return self.text_tokenizer.ids(text, max_tokens)

    def captured_kinds(self, batch: Batch, hidden_BTD: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Position kinds and token ids of a captured tensor: the batch's for the decoder; for the vision
        tower every position is an image patch (a CLIP class token is labelled special), ids are -1."""
        if self.stream != "vision":
            return batch.kinds_BT, batch.ids_BT
        b, t = hidden_BTD.shape[:2]
        kinds = np.full((b, t), POSITION_KINDS["image"], dtype=np.int8)
        if self.vision_cls:
            kinds[:, 0] = POSITION_KINDS["special"]
        return kinds, np.full((b, t), -1, dtype=np.int64)

    def text_batch(self, ids_list: Sequence[Sequence[int]]) -> Batch:
        """Left-padded batch of pre-tokenised text (pads are masked and labelled, never pooled)."""
        width = max(len(x) for x in ids_list)
        ids = np.full((len(ids_list), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(ids_list), width), dtype=np.int64)
        for i, x in enumerate(ids_list):
            ids[i, width - len(x) :] = x
            mask[i, width - len(x) :] = 1
        inputs = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        return Batch(inputs, self.kinds(ids, mask), ids)

    def image_batch(self, images, prompt: str) -> Batch:
        if not self.spec.is_vlm:
            raise ValueError(f"{self.spec.name} is a text-only model ({self.spec.family}); images need a VLM")
        token = getattr(self.processor, "image_token", "<image>")
        text = self.family.image_text(token, prompt)
        enc = self.processor(
            text=[text] * len(images), images=list(images), return_tensors="pt", padding=True
        )
        # Every tensor reaches the model (token_type_ids: PaliGemma's bidirectional prefix; image_grid_thw:
        # Qwen2-VL's multimodal rotary positions; ...); labels would ask for a loss.
        inputs = {k: v for k, v in enc.items() if isinstance(v, torch.Tensor) and k != "labels"}
        missing = [k for k in self.family.image_inputs if k not in inputs]
        if missing:
            raise ValueError(
                f"{self.spec.name}: the {type(self.processor).__name__} returned no {', '.join(missing)}, which "
                f"family {self.spec.family} needs with images; load its own processor (same id/path as the model)"
            )
        ids = inputs["input_ids"].numpy()
        mask = inputs["attention_mask"].numpy()
        return Batch(inputs, self.kinds(ids, mask), ids)

    def kinds(self, ids_BT: np.ndarray, mask_BT: np.ndarray) -> np.ndarray:
        kinds = np.full(ids_BT.shape, POSITION_KINDS["text"], dtype=np.int8)
        kinds[np.isin(ids_BT, self.special_ids)] = POSITION_KINDS["special"]
        if self.bos_id is not None:
            kinds[ids_BT == self.bos_id] = POSITION_KINDS["bos"]
        if self.image_token_id is not None:
            kinds[ids_BT == self.image_token_id] = POSITION_KINDS["image"]
        kinds[mask_BT == 0] = POSITION_KINDS["pad"]
        return kinds

    # -- forward ------------------------------------------------------------------------------------
    def forward(self, batch: Batch) -> None:
        dtype = next(self.model.parameters()).dtype
        inputs = {}
        for k, v in batch.inputs.items():
            v = v.to(self.device)
            inputs[k] = v.to(dtype) if v.is_floating_point() else v
        self.model(**inputs, use_cache=False)


def load_adapter(
    spec: ModelSpec,
    *,
    location: str | None = None,
    data_dir: str = "data",
    dtype: str = "auto",
    device: str = "auto",
) -> Adapter:
    """Load a model and its tokenizer/processor from the hub, a local folder or the demo folder.

    ``location`` overrides where it is loaded from (default: ``spec.location(data_dir)``).
    """
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    from repshift.models.processors import load_processor

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    location = location or spec.location(data_dir)
    kwargs = {"revision": spec.revision} if spec.source == "hub" else {}
    try:
        config = copy.deepcopy(AutoConfig.from_pretrained(location, **kwargs))
        fam = family(spec.family)
        auto = getattr(transformers, fam.auto_class)
        model = auto.from_pretrained(
            location, config=config, dtype=torch_dtype, attn_implementation="eager", **kwargs
        )
        if fam.vlm:
            processor = load_processor(fam, location, **kwargs)
            tokenizer = processor.tokenizer
        else:
            tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
            processor = None
    except OSError as err:
        raise RuntimeError(f"could not load model {spec.name} from {location!r}: {err}\n{HUB_HELP}") from err
    model.to(dev).eval()
    log.info(
        "loaded %s (%s) from %s on %s in %s", spec.name, type(model).__name__, location, dev, torch_dtype
    )
    return Adapter(spec, model, tokenizer, processor, dev)
