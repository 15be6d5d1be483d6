"""The analyst's report: one offline HTML page of ranked sites with before/after pictures.

Owns :mod:`.report` (:func:`~.report.write_report`), :mod:`.crops` (the before, after and
probability crops of a site, which the review app shows too) and :mod:`.templating` (the
autoescaping Jinja2 environment of the report's and the review app's templates, package data in
each package's ``templates/``). It reads the pair and its probability
raster through ``datasets`` and :mod:`groundbreak.infer.prediction` and knows nothing of how
the sites were scored: :mod:`groundbreak.infer.sites` and the nightly batch call it.
"""

__all__ = ["crops", "report", "templating"]
