"""Pipeline stage bodies: each `(ctx) -> figures` reads upstream folders and writes into ctx.out. Which body
runs for a track, with which adapter (embed's `ItemSide`, ensemble's `Blending`), the track's module in
tracks/ decides; a stage never asks which track it runs in."""
