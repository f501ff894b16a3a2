"""Pipeline stages: each `run_<track>(ctx) -> figures` reads upstream folders and writes into ctx.out."""
