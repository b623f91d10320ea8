"""Registers the peer metrics with the batched sweep (``score_many``, ``layer_sweep``).

TransRate registers itself in ``sweep``. Every metric here is higher-is-better and called as
``fn(features [n, d], labels, **kwargs)``; for LEEP the "features" are the source model's class
probabilities [n, Cs]. NCE takes hard source predictions [n], not features, so it is not here.
"""

from transrate_jax._src import gbc
from transrate_jax._src import hscore
from transrate_jax._src import leep
from transrate_jax._src import lfc
from transrate_jax._src import logme
from transrate_jax._src import parc
from transrate_jax._src import sfda
from transrate_jax._src import sweep

# name, function, can be vmapped over a stack of same-width feature matrices.
_PEERS = (
    ("logme", logme.logme, True),
    ("hscore", hscore.hscore, True),
    ("regularized_hscore", hscore.regularized_hscore, True),
    ("leep", leep.leep, True),
    ("nleep", leep.nleep, False),  # the PCA width is read from the data (two programs)
    ("gbc", gbc.gbc, True),
    ("lfc", lfc.lfc, True),
    ("sfda", sfda.sfda, True),
    ("parc", parc.parc, True),
)

for _name, _fn, _vmappable in _PEERS:
  sweep.register_metric(_name, _fn, vmappable=_vmappable, zero_pad_exact=False, overwrite=True)
