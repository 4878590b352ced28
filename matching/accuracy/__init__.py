"""How accurate the matcher is, for whom: the statistics behind the bias warnings and the threshold advice.

- ``rates``: pure NumPy. Pairwise FMR and FNMR with identity-level intervals, per demographic group.
- ``one_to_many``: pure NumPy. What a search of a whole gallery means for a stranger (FPIR, FNIR), from an audit's
  pairs across all its people and the gallery's composition.
- ``evaluation``: labelled evaluation sets and audit runs (the writes), and which run is valid (the reads).
- ``gallery_risk``: the 1:N figures of one organisation's gallery, the proposed operating point and the groups that
  are weak evidence, read from stored audit rows.
- ``findings``: what reviewers found, beside what the audit predicted for the same searches.
- ``charts``: server-rendered SVG plots of the figures above.
"""
