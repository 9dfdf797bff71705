"""Steering: directions written back into the residual stream at the output of block L, measured on held-out inputs."""


rule fit_steering_directions:
    """Probe, class-mean, SAE and random directions of one (model, pair, layer), and their OMP sparsity in the SAE."""
    input:
        unpack(lambda wc: steering_targets.direction_inputs(config, wc.model, wc.layer)),
    output:
        directions=f"{layout.steering_directions(RESULTS, '{model}', '{pair}', '{layer}')}.safetensors",
        meta=f"{layout.steering_directions(RESULTS, '{model}', '{pair}', '{layer}')}.json",
        sparsity=layout.steering_sparsity(RESULTS, "{model}", "{pair}", "{layer}"),
    log:
        f"{LOGS}/fit_steering_directions/{{model}}/{{pair}}/layer-{{layer}}.log",
    wildcard_constraints:
        pair="|".join(config.get("steering", {}).get("pairs", {})) or "(?!x)x",
    params:
        pair=lambda wc: canon(config["steering"]["pairs"][wc.pair]),
        heldout_fold=config.get("steering", {}).get("heldout_fold", 0),
        directions=canon(config.get("steering", {}).get("directions", [])),
        n_random=config.get("steering", {}).get("n_random", 0),
        sparsity=canon(config.get("steering", {}).get("sparsity", {})),
        sae_dir=lambda wc: steering_targets.sae_layer_dir(config, wc.layer),
        seed=config["seed"],
        code=step_hash("fit_steering_directions"),
    message:
        "Fitting steering directions of {wildcards.model} for {wildcards.pair} at layer {wildcards.layer}"
    script:
        "../workflow_scripts/fit_steering_directions.py"


rule steer_model:
    """Efficacy, damage and persistence of every direction and alpha at one (model, pair, layer); greedy rollouts."""
    input:
        unpack(
            lambda wc: steering_targets.steer_inputs(
                config, wc.model, wc.pair, wc.layer
            )
        ),
    output:
        table=layout.steering_table(RESULTS, "{model}", "{pair}", "{layer}"),
        rollouts=layout.steering_rollouts(RESULTS, "{model}", "{pair}", "{layer}"),
    log:
        f"{LOGS}/steer_model/{{model}}/{{pair}}/layer-{{layer}}.log",
    benchmark:
        f"{BENCH}/steer_model/{{model}}/{{pair}}/layer-{{layer}}.tsv"
    wildcard_constraints:
        pair="|".join(config.get("steering", {}).get("pairs", {})) or "(?!x)x",
    threads: 2
    params:
        spec=lambda wc: canon(config["models"][wc.model]),
        extraction=canon(
            {k: config["extraction"][k] for k in ("dtype", "device", "max_tokens")}
        ),
        steering=steering_params,
        code=step_hash("steer_model"),
    message:
        "Steering {wildcards.model} along {wildcards.pair} at layer {wildcards.layer}"
    script:
        "../workflow_scripts/steer_model.py"


rule plot_steering:
    """Steering dose-response with bands, efficacy vs damage and the random-direction band (PDF, PNG, TSV)."""
    input:
        tables=steering_targets.all_steering_tables(config),
    output:
        pdf=layout.figure(RESULTS, "steering"),
        png=report(
            layout.figure(RESULTS, "steering", "png"),
            caption="../report/steering.rst",
            category="Steering",
            labels=figure_labels("steering", "figure (PNG)"),
        ),
        tsv=report(
            layout.figure(RESULTS, "steering", "tsv"),
            caption="../report/table.rst",
            category="Steering",
            labels=figure_labels("steering", "numbers (TSV)"),
        ),
    log:
        f"{LOGS}/plot_steering/steering.log",
    params:
        n=figure_n("steering"),
        code=step_hash("plot_steering"),
    message:
        "Plotting the steering figures"
    script:
        "../workflow_scripts/plot_steering.py"


rule table_steering_rollouts:
    """Every steering job's greedy rollouts as one small table for the report (HTML, TSV), unedited rows first."""
    input:
        rollouts=steering_targets.all_steering_tables(config, "rollouts"),
    output:
        html=report(
            layout.figure(RESULTS, "steering_rollouts", "html"),
            caption="../report/steering_rollouts.rst",
            category="Steering",
            labels=figure_labels("steering_rollouts", "rollouts (HTML)"),
        ),
        tsv=report(
            layout.figure(RESULTS, "steering_rollouts", "tsv"),
            caption="../report/steering_rollouts_table.rst",
            category="Steering",
            labels=figure_labels("steering_rollouts", "rollouts (TSV)"),
        ),
    log:
        f"{LOGS}/table_steering_rollouts/steering_rollouts.log",
    params:
        code=step_hash("table_steering_rollouts"),
    message:
        "Tabulating the steered rollouts for the report"
    script:
        "../workflow_scripts/table_steering_rollouts.py"
