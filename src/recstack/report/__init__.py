"""Reading a run for humans: tables (analysis.py), matplotlib figures (plots.py), one HTML page (html.py).

Only reads files the stages wrote; never runs a stage. The notebooks call these functions, so what a
notebook shows and what `./run.sh report` writes come from the same code.
"""
