"""`peftpipe serve`: the HTTP server (app.py: FastAPI, continuous batching, limits) and its
page (page.py), over serving.Predictor. Neither the stages nor the tools import it
(tests/test_layout.py)."""
