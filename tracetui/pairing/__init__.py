"""Pairing: which call of the ported model corresponds to which call of the original.

The modules, from the entry point down:

* :mod:`~tracetui.pairing.alignment` — the :class:`Alignment` of two traces and its
  :class:`Pair` rows; :func:`align`, the one entry point (by name and rename map, then inferred);
* :mod:`~tracetui.pairing.rename_map` — the rename map a user passes with ``--map``: its rules,
  read and checked;
* :mod:`~tracetui.pairing.map_writer` — an alignment turned into such rules and written as a
  commented map (``tracetui align -o``, the interface's ``w``);
* :mod:`~tracetui.pairing.search` — the inference of the pairs names leave open: the ordered
  tree search, its repair rounds and the consensus between them;
* :mod:`~tracetui.pairing.segments` — the stretches of calls that search takes one at a time;
* :mod:`~tracetui.pairing.scoring` — the evidence for one candidate pair and its weights;
* :mod:`~tracetui.pairing.calls` — what the scorer knows about each recorded call;
* :mod:`~tracetui.pairing.values` — recorded values compared cheaply (sketches, agreement);
* :mod:`~tracetui.pairing.names` — the name vocabulary (synonyms, templates, kinds of classes),
  which ``tracetui weights`` and the ``align`` command share.

Nothing is re-exported here: import from the module that says what a name is.
"""
