"""The cross-section checks JSON Schema cannot express: a comparison naming an unknown model, a layer a model does
not have, a dataset its source cannot supply, ... all before any job runs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from repshift.config.specs import ConfigError, model_spec
from repshift.config.targets import (
    comparison_layers,
    dataset_source,
    fused_pairs,
    fused_sae,
    model_layers,
    probe_layers,
    sae_feature_analyses,
    sae_feature_layers,
    sae_feature_pairs,
    sae_layers,
    sae_models,
    task_models,
)
from repshift.models.families import DEMO_LLMS, FAMILIES, demo_archs

NULL_WORDS = ("null", "none", "~")  # what `--config key=null` can pass for None (Snakemake passes the string)


def validate_config(config: dict[str, Any], schema_path: str | os.PathLike) -> dict[str, Any]:
    """Validate ``config`` in place against the JSON Schema at ``schema_path`` and fill its defaults, as
    Snakemake's ``validate`` does, but report errors a person can read: one line per error (key path, what was
    expected, the allowed values or keys), never the schema.

    A nullable key (``type: [..., "null"]``) given as the string ``null``/``none``/``~`` — what
    ``--config extraction.fused_sae=null`` passes — is set to None first. Raises ConfigError.
    """
    import jsonschema
    import yaml

    schema = yaml.safe_load(open(schema_path, encoding="utf-8"))  # noqa: SIM115 (read whole at once)
    _unset_null_words(config, schema, schema)
    base = jsonschema.validators.validator_for(schema)
    validator = jsonschema.validators.extend(base, {"properties": _properties_with_defaults(base)})(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        lines = [_error_line(e) for e in errors]
        raise ConfigError(
            f"the config does not match {schema_path} ({len(lines)} error{'s' * (len(lines) > 1)}):\n  "
            + "\n  ".join(lines)
        )
    return config


def _properties_with_defaults(base):
    """The ``properties`` keyword, filling each missing property's ``default`` first (jsonschema FAQ recipe,
    as used by snakemake.utils.validate)."""
    check = base.VALIDATORS["properties"]

    def properties(validator, props, instance, schema):
        if isinstance(instance, dict):
            for key, sub in props.items():
                if isinstance(sub, dict) and "default" in sub:
                    instance.setdefault(key, sub["default"])
        yield from check(validator, props, instance, schema)

    return properties


def _resolve(schema: Any, root: Mapping[str, Any]) -> Any:
    while (
        isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and schema["$ref"].startswith("#/")
    ):
        for part in schema["$ref"][2:].split("/"):
            root = root[part]
        schema = root
    return schema


def _nullable(schema: Any, root: Mapping[str, Any]) -> bool:
    schema = _resolve(schema, root)
    if not isinstance(schema, dict):
        return False
    kind = schema.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind) or None in schema.get("enum", ()):
        return True
    return any(_nullable(s, root) for k in ("anyOf", "oneOf") for s in schema.get(k, ()))


def _unset_null_words(instance: Any, schema: Any, root: Mapping[str, Any]) -> None:
    """Replace NULL_WORDS strings by None wherever the schema allows null, recursively (in place)."""
    schema = _resolve(schema, root)
    if not isinstance(schema, dict):
        return
    if isinstance(instance, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, value in instance.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if sub is None:
                continue
            if isinstance(value, str) and value.strip().lower() in NULL_WORDS and _nullable(sub, root):
                instance[key] = None
            else:
                _unset_null_words(value, sub, root)
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for value in instance:
            _unset_null_words(value, schema["items"], root)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _error_line(err) -> str:
    """``key.path: what was expected (allowed values)`` for one jsonschema error, without the schema."""
    where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
    kind, expected, schema = err.validator, err.validator_value, err.schema
    if kind == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        unknown = sorted(set(err.instance) - set(allowed))
        return f"{where}: unknown key {', '.join(map(repr, unknown))} (allowed: {', '.join(allowed)})"
    if kind == "enum":
        return f"{where}: {_short(err.instance)} is not allowed (allowed: {', '.join(map(str, expected))})"
    if kind == "type":
        wanted = " or ".join(expected) if isinstance(expected, list) else expected
        return f"{where}: expected {wanted}, got {_short(err.instance)}"
    if kind in ("anyOf", "oneOf") and err.context:
        options = "; ".join(sorted({_error_line(e).split(": ", 1)[-1] for e in err.context}))
        return f"{where}: {_short(err.instance)} matches none of the allowed forms ({options})"
    return f"{where}: {err.message.replace(repr(err.instance), _short(err.instance))}"


def _check_sae_features(cfg: Mapping[str, Any]) -> None:
    datasets = cfg["datasets"]
    for name, a in sae_feature_analyses(cfg).items():
        where = f"sae_features.{name}"
        if a["sae"] not in cfg["saes"]:
            raise ConfigError(f"{where}.sae: unknown SAE {a['sae']!r}; saes: {sorted(cfg['saes'])}")
        if a["dataset"] not in datasets:
            raise ConfigError(
                f"{where}.dataset: unknown dataset {a['dataset']!r}; datasets: {sorted(datasets)}"
            )
        modality = datasets[a["dataset"]]["modality"]
        if modality not in ("image", "paired", "attribute"):
            raise ConfigError(
                f"{where}.dataset: {a['dataset']} has no image rows (modality {modality}); class features and "
                "SAE-feature classification read image tokens"
            )
        for m in a["models"]:
            if m not in cfg["models"]:
                raise ConfigError(f"{where}.models: unknown model {m!r}; models: {sorted(cfg['models'])}")
            spec = model_spec(cfg, m)
            if not spec.is_vlm:
                raise ConfigError(
                    f"{where}.models: {m} is a text-only model but {a['dataset']} is read through image tokens"
                )
            if not spec.reads_text:
                raise ConfigError(
                    f"{where}.models: {m} is a vision tower; the SAEs read the decoder's residual stream"
                )
            available = sae_layers(cfg, a["sae"], m)
            if a.get("layers", "all") != "all":
                try:
                    spec.check_layers([int(x) for x in a["layers"]])
                except ConfigError as err:
                    raise ConfigError(f"{where}.layers: {err}") from err
            bad = [x for x in sae_feature_layers(cfg, name, m) if x not in available]
            if bad:
                raise ConfigError(
                    f"{where}.layers: layer {bad[0]} of {m} is not both extracted and covered by SAE {a['sae']} "
                    f"(available: {available})"
                )
            if not available:
                raise ConfigError(f"{where}: no layer of {m} is both extracted and covered by SAE {a['sae']}")


def check_config(cfg: Mapping[str, Any]) -> None:
    """Cross-section checks, run once before any job. Raises ConfigError naming the key to change."""
    for name in cfg["models"]:
        _check_model(cfg, name)
    if cfg["coco"]["source"] == "path" and not cfg["coco"].get("root"):
        raise ConfigError("coco.source is 'path' but coco.root is not set: give the folder holding val2017/")
    check_datasets(cfg)
    for name in cfg["saes"]:
        _check_sae(cfg, name)
    for name in cfg["comparisons"]:
        _check_comparison(cfg, name)
    _check_sae_stage(cfg)
    _check_sae_features(cfg)
    _check_steering(cfg)
    check_pretrained_saes(cfg)
    _check_curve_layers(cfg)
    for name in cfg["probes"]["tasks"]:
        _check_probe_task(cfg, name)
    _check_sae_training(cfg)


def _check_model(cfg: Mapping[str, Any], name: str) -> None:
    """models.<name>: where it loads from, its demo recipe, its stream and its layers."""
    spec = model_spec(cfg, name)
    if spec.source == "hub" and not spec.id:
        raise ConfigError(f"models.{name}: source hub needs `id` (e.g. google/gemma-2-2b)")
    if spec.source == "local" and not spec.path:
        raise ConfigError(f"models.{name}: source local needs `path` (a save_pretrained folder)")
    if spec.source == "demo":
        _check_demo_model(cfg, name, spec)
    if spec.stream == "vision" and not FAMILIES[spec.family].vision_stream:
        supported = " and ".join(n for n, f in FAMILIES.items() if f.vision_stream)
        raise ConfigError(f"models.{name}: stream vision is supported for {supported}, not {spec.family}")
    model_layers(cfg, name)


def _check_demo_model(cfg: Mapping[str, Any], name: str, spec) -> None:
    """models.<name>.demo: a known arch of the model's family; a demo VLM names a demo base of equal depth."""
    models = cfg["models"]
    demo = dict(spec.demo)
    arch = demo.get("arch")
    if not arch:
        raise ConfigError(f"models.{name}: source demo needs `demo: {{arch: ...}}`")
    archs = demo_archs()
    if arch not in archs:
        raise ConfigError(f"models.{name}.demo.arch: unknown {arch!r}; choose one of {', '.join(archs)}")
    expected = archs[arch]
    if spec.family != expected:
        raise ConfigError(f"models.{name}: demo arch {arch} is family {expected}, not {spec.family}")
    if arch in DEMO_LLMS:
        return
    base = demo.get("base")
    want = FAMILIES[arch].demo_base
    if base not in models or models[base].get("demo", {}).get("arch") != want:
        raise ConfigError(f"models.{name}.demo.base must name a demo {want} model, got {base!r}")
    if models[base]["num_layers"] != spec.num_layers:
        raise ConfigError(f"models.{name}: num_layers must equal its base {base}'s")
    k = demo.get("perturb_from")
    if k is None or not 0 <= k <= spec.num_layers:
        raise ConfigError(f"models.{name}.demo.perturb_from must be in 0..{spec.num_layers}, got {k!r}")


def _check_sae(cfg: Mapping[str, Any], name: str) -> None:
    """saes.<name>: the keys its source needs; a demo SAE's training model and dataset exist."""
    s = cfg["saes"][name]
    src = s["source"]
    need = {"pretrained": ["release", "id_template"], "local": ["path_template"], "demo": ["train"]}[src]
    for key in need:
        if key not in s:
            raise ConfigError(f"saes.{name}: source {src} needs `{key}`")
    if src == "demo":
        if s["train"]["model"] not in cfg["models"]:
            raise ConfigError(f"saes.{name}.train.model: unknown model {s['train']['model']!r}")
        if s["train"]["dataset"] not in cfg["datasets"]:
            raise ConfigError(f"saes.{name}.train.dataset: unknown dataset {s['train']['dataset']!r}")


def _check_comparison(cfg: Mapping[str, Any], name: str) -> None:
    """comparisons.<name>: known models, SAE and a dataset with text rows, and at least one shared layer."""
    c, models, datasets = cfg["comparisons"][name], cfg["models"], cfg["datasets"]
    for key in ("base", "adapted"):
        if c[key] not in models:
            raise ConfigError(f"comparisons.{name}.{key}: unknown model {c[key]!r}; models: {sorted(models)}")
    if c["sae"] not in cfg["saes"]:
        raise ConfigError(f"comparisons.{name}.sae: unknown SAE {c['sae']!r}; saes: {sorted(cfg['saes'])}")
    if c["dataset"] not in datasets:
        raise ConfigError(f"comparisons.{name}.dataset: unknown dataset {c['dataset']!r}")
    if datasets[c["dataset"]]["modality"] not in ("text", "paired"):
        raise ConfigError(
            f"comparisons.{name}: dataset {c['dataset']} has no text rows (text-only comparison)"
        )
    if not comparison_layers(cfg, name):
        raise ConfigError(f"comparisons.{name}: no layer is both extracted and covered by SAE {c['sae']}")


def _check_probe_task(cfg: Mapping[str, Any], name: str) -> None:
    """probes.tasks.<name>: its dataset and models exist and can read the rows the task probes."""
    t, models, datasets = cfg["probes"]["tasks"][name], cfg["models"], cfg["datasets"]
    if t["dataset"] not in datasets:
        raise ConfigError(f"probes.tasks.{name}.dataset: unknown dataset {t['dataset']!r}")
    modality = datasets[t["dataset"]]["modality"]
    for m in task_models(cfg, name):
        if m not in models:
            raise ConfigError(f"probes.tasks.{name}: unknown model {m!r}; models: {sorted(models)}")
        if modality in ("image", "attribute") and not model_spec(cfg, m).is_vlm:
            raise ConfigError(
                f"probes.tasks.{name}: dataset {t['dataset']} is image-only but {m} is a text-only model"
            )
    if t.get("target", "label") == "modality":
        if modality != "paired":
            raise ConfigError(
                f"probes.tasks.{name}: the modality probe needs a paired dataset, not {modality}"
            )
        for m in t["models"]:
            if not model_spec(cfg, m).is_vlm:
                raise ConfigError(f"probes.tasks.{name}: the modality probe needs VLMs; {m} is text-only")
    for m in t.get("cross_modal", []) + (t["models"] if t.get("target", "label") == "modality" else []):
        if not model_spec(cfg, m).reads_text:
            raise ConfigError(f"probes.tasks.{name}: {m} is a vision tower; it reads no captions")
    for m in t.get("cross_modal", []):
        if not model_spec(cfg, m).is_vlm:
            raise ConfigError(f"probes.tasks.{name}.cross_modal: {m} is not a VLM")
        if modality != "paired":
            raise ConfigError(f"probes.tasks.{name}.cross_modal needs a paired dataset, not {modality}")


def _check_sae_training(cfg: Mapping[str, Any]) -> None:
    """sae_training: a paired dataset, VLMs, layers each model has, and a base SAE present at every such layer."""
    st = cfg.get("sae_training")
    if not st:
        return
    datasets, saes = cfg["datasets"], cfg["saes"]
    d = st["dataset"]
    if d not in datasets:
        raise ConfigError(f"sae_training.dataset: unknown dataset {d!r}; datasets: {sorted(datasets)}")
    if datasets[d]["modality"] != "paired":
        raise ConfigError(
            f"sae_training.dataset: {d} is {datasets[d]['modality']}; modality sharing and the image-span CE "
            "need a paired dataset (image rows and their captions)"
        )
    for m, entry in st["models"].items():
        if m not in cfg["models"]:
            raise ConfigError(f"sae_training.models: unknown model {m!r}; models: {sorted(cfg['models'])}")
        spec = model_spec(cfg, m)
        if not spec.is_vlm or spec.stream != "decoder":
            raise ConfigError(f"sae_training.models.{m}: SAEs are trained on a VLM's decoder stream")
        n = spec.num_layers
        for layer in entry["layers"]:
            if not 0 <= layer < n:
                raise ConfigError(
                    f"sae_training.models.{m}.layers: layer {layer} requested but {m} has {n} blocks (0-{n - 1})"
                )
        base = entry.get("base_sae")
        if base is None:
            continue
        if base not in saes:
            raise ConfigError(f"sae_training.models.{m}.base_sae: unknown SAE {base!r}; saes: {sorted(saes)}")
        on = saes[base]["train"]["model"] if saes[base]["source"] == "demo" else m
        missing = sorted(set(entry["layers"]) - set(sae_layers(cfg, base, on)))
        if missing:
            raise ConfigError(
                f"sae_training.models.{m}.base_sae: {base} has no SAE at layer(s) {missing}; "
                f"train at layers the base SAE covers (saes.{base}.layers)"
            )


def _check_steering(cfg: Mapping[str, Any]) -> None:
    """steering: the task, models, layers, SAE and pair classes name what exists (before the first job)."""
    s = cfg.get("steering") or {}
    if not (s.get("models") and s.get("pairs")):
        return
    tasks = cfg["probes"]["tasks"]
    task = s.get("task")
    if task not in tasks:
        raise ConfigError(f"steering.task: unknown probe task {task!r}; probes.tasks: {sorted(tasks)}")
    probed, layers = tasks[task]["models"], probe_layers(cfg, task)
    for m in s["models"]:
        if m not in cfg["models"]:
            raise ConfigError(f"steering.models: unknown model {m!r}; models: {sorted(cfg['models'])}")
        if m not in probed:
            raise ConfigError(
                f"steering.models: {m} has no saved probes of task {task} (probes.tasks.{task}.models: {probed})"
            )
        spec = model_spec(cfg, m)
        if not spec.reads_text:
            raise ConfigError(f"steering.models: {m} is a vision tower; steering measures need its decoder")
        try:
            spec.check_layers(list(s.get("layers", [])))
        except ConfigError as err:
            raise ConfigError(f"steering.layers: {err}") from err
    for layer in s.get("layers", []):
        if layer not in layers:
            raise ConfigError(
                f"steering.layers: layer {layer} is not a probe layer of task {task} (probed: {_span(layers)})"
            )
    _check_steering_data(cfg, s, task)


def _check_steering_data(cfg: Mapping[str, Any], s: Mapping[str, Any], task: str) -> None:
    """steering.pairs name classes of the task's dataset; heldout_fold, sae and class_features exist."""
    from repshift.data.sources import spec_from_config

    name = cfg["probes"]["tasks"][task]["dataset"]
    spec = spec_from_config(name, cfg["datasets"][name])
    classes = getattr(spec, "label_names", None)
    for pair, p in s["pairs"].items():
        for key in ("source", "target"):
            if classes is not None and p[key] not in classes:
                raise ConfigError(
                    f"steering.pairs.{pair}.{key}: {p[key]!r} is not a class of dataset {name} "
                    f"(steering.task {task}); classes: {', '.join(classes)}"
                )
        if p["source"] == p["target"]:
            raise ConfigError(f"steering.pairs.{pair}: source and target are both {p['source']!r}")
    folds = getattr(spec, "folds", None)
    if folds is not None and not 0 <= int(s.get("heldout_fold", 0)) < folds:
        raise ConfigError(
            f"steering.heldout_fold: {s['heldout_fold']} but dataset {name} has {folds} folds (0-{folds - 1})"
        )
    sae = s.get("sae")
    if sae is not None:
        if sae not in cfg["saes"]:
            raise ConfigError(f"steering.sae: unknown SAE {sae!r}; saes: {sorted(cfg['saes'])}")
        for m in s["models"]:
            missing = [L for L in s.get("layers", []) if L not in sae_layers(cfg, sae, m)]
            if missing:
                raise ConfigError(f"steering.sae: {sae} is not applied to {m} at layer {missing[0]}")
    features = s.get("class_features")
    if features is not None and features not in sae_feature_analyses(cfg):
        raise ConfigError(
            f"steering.class_features: unknown sae_features analysis {features!r}; "
            f"sae_features: {sorted(sae_feature_analyses(cfg))}"
        )


def _check_curve_layers(cfg: Mapping[str, Any]) -> None:
    """probes.settings.curve_layers: every layer is extracted for at least one probed model (else it never runs)."""
    curve = ((cfg["probes"].get("settings") or {}).get("curve_layers")) or []
    probed = sorted(
        {m for name in cfg["probes"]["tasks"] for m in task_models(cfg, name) if m in cfg["models"]}
    )
    if not probed:
        return
    extracted = {m: model_layers(cfg, m) for m in probed}
    for layer in curve:
        if not any(layer in layers for layers in extracted.values()):
            have = ", ".join(
                f"{m} ({model_spec(cfg, m).num_layers} blocks, extracted {_span(extracted[m])})"
                for m in probed
            )
            raise ConfigError(
                f"probes.settings.curve_layers: layer {layer} is not extracted for any probed model, so its "
                f"learning curve would never run; probed: {have}. Remove it or extract it (extraction.layers)"
            )


def _span(layers: list[int]) -> str:
    return f"{layers[0]}-{layers[-1]}" if layers == list(range(layers[0], layers[-1] + 1)) else str(layers)


def _check_sae_stage(cfg: Mapping[str, Any]) -> None:
    """extraction.fused_sae and spliced: references, and no fused SAE fit on a pair it encodes."""
    datasets = cfg["datasets"]
    fused = fused_sae(cfg)
    if fused is not None:
        if fused not in cfg["saes"]:
            raise ConfigError(f"extraction.fused_sae: unknown SAE {fused!r}; saes: {sorted(cfg['saes'])}")
        s = cfg["saes"][fused]
        if s["source"] == "demo" and (s["train"]["model"], s["train"]["dataset"]) in fused_pairs(cfg):
            raise ConfigError(
                f"extraction.fused_sae: {fused} is fit on ({s['train']['model']}, {s['train']['dataset']}), a "
                "pair it would also encode inside that extraction job (a cycle); set fused_sae: null or fit the "
                "SAE on another dataset"
            )
        if int(cfg["extraction"].get("shards", 1)) > 1:
            raise ConfigError("extraction.fused_sae needs shards: 1 (codes are not merged across shards)")
    wanted = (cfg.get("spliced") or {}).get("datasets", "comparisons")
    if wanted != "comparisons":
        for d in wanted:
            if d not in datasets:
                raise ConfigError(f"spliced.datasets: unknown dataset {d!r}; datasets: {sorted(datasets)}")
            if datasets[d]["modality"] not in ("text", "paired"):
                raise ConfigError(
                    f"spliced.datasets: {d} has no text rows (modality {datasets[d]['modality']})"
                )


def check_datasets(cfg: Mapping[str, Any]) -> None:
    """Every dataset entry fits its source (keys, class names, sizes), and the sources it needs are configured."""
    from repshift.data.sources import spec_from_config

    sources = {dataset_source(cfg, name) for name in cfg["datasets"]}
    coco = cfg["coco"]
    if "coco" in sources and coco["source"] == "download":
        from repshift.data.download import archive_spec

        for key in (coco["split"], "annotations_trainval2017"):
            spec = coco.get("archives", {}).get(key)
            if spec is None:
                raise ConfigError(
                    f"coco.archives.{key} is missing: coco.source is download, so give its url and md5/sha256 "
                    "(config.yaml lists the official ones)"
                )
            try:
                archive_spec(spec, f"coco.archives.{key}")
            except ValueError as err:
                raise ConfigError(str(err)) from err
    cifar = cfg.get("cifar100") or {}
    if "cifar100" in sources:
        src = cifar.get("source", "download")
        if src == "download":
            from repshift.data.download import archive_spec

            if not cifar.get("archive"):
                raise ConfigError(
                    "cifar100.archive is missing: a dataset has source cifar100 and cifar100.source is download; "
                    "give the archive's url and md5 (config.yaml lists the official ones)"
                )
            try:
                archive_spec(cifar["archive"], "cifar100.archive")
            except ValueError as err:
                raise ConfigError(str(err)) from err
        if src == "path" and not cifar.get("root"):
            raise ConfigError(
                "cifar100.source is 'path' but cifar100.root is not set: give the folder holding cifar-100-python/"
            )
    if "imagenet" in sources and not (cfg.get("imagenet") or {}).get("root"):
        raise ConfigError(
            "a dataset has source imagenet but imagenet.root is not set: give the folder of a local ILSVRC-2012 copy "
            "(LOC_synset_mapping.txt, train/, val/); ImageNet is never downloaded"
        )
    for name, d in cfg["datasets"].items():
        try:
            spec = spec_from_config(name, d)
        except ValueError as err:
            raise ConfigError(f"datasets.{name}: {err}") from err
        if dataset_source(cfg, name) == "cifar100":
            _check_cifar_sizes(name, spec, cifar)


def _check_cifar_sizes(name: str, spec: Any, cifar: Mapping[str, Any]) -> None:
    """Classes and n_per_class against what the configured CIFAR-100 copy holds."""
    from repshift.data.cifar import COARSE_LABEL_NAMES, COARSE_OF_FINE, FINE_LABEL_NAMES, OFFICIAL_SIZES

    synthetic = cifar.get("source") == "synthetic"
    if synthetic:
        syn = cifar.get("synthetic") or {}
        n_classes = int(syn.get("n_classes", 10))
        n_split = int(syn.get(f"n_{spec.split}", 200 if spec.split == "train" else 100))
        fine = FINE_LABEL_NAMES[:n_classes]
        present = set(fine)
        if spec.level == "coarse":
            present = {COARSE_LABEL_NAMES[COARSE_OF_FINE[FINE_LABEL_NAMES.index(f)]] for f in fine}
        missing = [c for c in spec.label_names if c not in present]
        if spec.classes is not None and missing:
            raise ConfigError(
                f"datasets.{name}: class {missing[0]!r} has no image in the synthetic CIFAR-100 "
                f"(cifar100.synthetic.n_classes: {n_classes} uses {', '.join(fine)})"
            )
        per_class = n_split // n_classes if spec.level == "fine" else None
    else:
        per_class = OFFICIAL_SIZES[spec.split] // (100 if spec.level == "fine" else 20)
    too_many = per_class is not None and spec.n_per_class is not None and spec.n_per_class > per_class
    if too_many and not spec.allow_fewer:
        raise ConfigError(
            f"datasets.{name}: n_per_class {spec.n_per_class} but the {spec.split} split has {per_class} images "
            f"per {spec.level} class; lower it (or leave it out for all) or set allow_fewer: true"
        )


def check_pretrained_saes(cfg: Mapping[str, Any]) -> None:
    """Every pretrained SAE at every layer it is applied at reads that layer (output of block L), by the release
    metadata sae-lens holds offline (``sae_lens/pretrained_saes.yaml``); raises ConfigError naming the SAE, the id,
    its hook and what to change. SAEs whose hook is not known offline are checked when they are fetched."""
    from repshift.sae.load import check_release_layer

    for name, s in cfg["saes"].items():
        if s["source"] != "pretrained":
            continue
        models = {m for m, _ in sae_models(cfg, name)} | {
            m for sae, m, _ in sae_feature_pairs(cfg) if sae == name
        }
        layers = sorted({layer for m in models if m in cfg["models"] for layer in sae_layers(cfg, name, m)})
        for layer in layers:
            try:
                check_release_layer(s["release"], s["id_template"], layer, where=f"saes.{name}")
            except ValueError as err:
                raise ConfigError(str(err)) from err
