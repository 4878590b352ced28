"""How accurate the matcher is, for whom: the statistics behind the bias warnings and the threshold advice.

- ``rates``: pure NumPy. Pairwise FMR and FNMR with identity-level intervals, per demographic group.
- ``evaluation``: labelled evaluation sets and audit runs (the writes), and which run is valid (the reads).
- ``gallery_risk``: what a search of one organisation's gallery means (1:N), read from stored audit rows.
- ``charts``: server-rendered SVG plots of the figures above.
"""
