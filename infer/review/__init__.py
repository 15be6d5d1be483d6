"""The review app: a local web app where analysts triage the nightly batch's alerts.

Owns:

- :mod:`.app`: the threaded HTTP server (standard library), its routes and forms;
- :mod:`.pages`: the HTML pages (queue, alert, messages), from the Jinja2 templates in
  ``templates/`` (autoescaped);
- :mod:`.assets`: the stylesheet and script, served from memory;
- :mod:`.queue`: the analyst's queue over a nightly state (filters, history, CSV/GeoJSON);
- :mod:`.crops`: before/after pictures of an alert, from the scenes the model saw.

It reads and writes the nightly state (:mod:`groundbreak.infer.nightly`); its command is
:mod:`groundbreak.infer.cli.review`.
"""

__all__ = ["app", "assets", "crops", "pages", "queue"]
