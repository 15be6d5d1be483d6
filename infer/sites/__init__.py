"""Sites: probability rasters turned into scored, ranked sites and alert rows.

Owns:

- :mod:`.sites`: watch-list polygons and discovered change regions, measured on a raster;
- :mod:`.region_stream`: connected change regions labelled band by band (bounded memory);
- :mod:`.scoring`: a site's score from its probabilities and area;
- :mod:`.ranking`: ``groundbreak rank`` as a library (pairs -> predictions -> ranked sites ->
  a run folder);
- :mod:`.alerts_io`: the alert rows as CSV and GeoJSON.

It sits above :mod:`groundbreak.infer.prediction` and :mod:`groundbreak.infer.report` (a run
folder holds the HTML report).
"""

__all__ = ["alerts_io", "ranking", "region_stream", "scoring", "sites"]
