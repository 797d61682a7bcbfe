"""The user's tools around the pipeline, behind `peftpipe` commands: compare (paired tests
between runs), tune (search), method_sweep (`peftpipe methods`), summarize (seeds), recipes,
infer (`peftpipe predict`). The stages never import them (tests/test_layout.py)."""
