"""Pipeline steps: one module per step, each with a typed config, `run(config)` and `main(argv)`."""
