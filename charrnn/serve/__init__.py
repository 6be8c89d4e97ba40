"""`charrnn serve`: a text-generation service over HTTP (needs the serve extra).

Layers: engine.py (the worker thread, continuous batching; the only module importing the rest of
charrnn) <- models.py (names, --watch) <- app.py (FastAPI routes; schemas.py, errors.py) <- main.py
(uvicorn, signals). The page at / is static/ (plain HTML, CSS and JavaScript, nothing fetched elsewhere).
"""
INSTALL = "pip install 'charrnn[serve]'"
