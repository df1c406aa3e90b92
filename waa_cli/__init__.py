"""`waa-eval`: the command-line client of the evaluation API (start, watch, status, list,
cancel, retry, results, artifacts).

A client tool, not part of the function app: it talks to the app over HTTP only and imports
nothing from the app's packages, so it runs from any machine (`pip install -e .`).
"""
