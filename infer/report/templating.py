"""The Jinja2 environment of groundbreak's HTML (the report and the review app's pages).

Templates are package data: each package that renders HTML keeps them in its ``templates/``
folder. Autoescaping is on for every template, so any value a template prints (site names, pair
ids, notes, analysts, paths) is HTML-escaped; only a macro's output (a ``Markup``) is not.
"""

from __future__ import annotations

from jinja2 import ChoiceLoader, Environment, PackageLoader, StrictUndefined


def template_environment(*packages: str) -> Environment:
    """An environment over the ``templates/`` folders of ``packages`` (the first that has a
    template wins), autoescaping, with block tags on their own lines left out of the output."""
    return Environment(
        loader=ChoiceLoader([PackageLoader(package) for package in packages]),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
