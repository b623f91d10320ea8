"""transrate_jax: transferability estimation in JAX.

Which pre-trained model, and which layer of it, will transfer best to a target task? TransRate
(Huang et al., ICML 2022) and its peers answer before any fine-tuning, batched and jit-compiled
on CPU, GPU or TPU. Flax capture lives in ``transrate_jax.capture`` and the embedded model zoo in
``transrate_jax.zoo`` (imported on demand, so ``import transrate_jax`` does not import Flax).
"""

# Importing changes nothing in the process; the first call on the CPU sets SciPy's bundled OpenBLAS
# (which jaxlib's factorisations call) not to spin against XLA's threads (_src/lapack_threads.py;
# TRANSRATE_JAX_LAPACK_THREADS=keep opts out).
from transrate_jax._src import lapack_threads as _lapack_threads

# The on-disk cache and JAX's persistent compilation cache (a one-line opt-in).
from transrate_jax._src.cache import enable_compilation_cache

# The metric registry: one description per metric (each metric module registers itself).
from transrate_jax._src.registry import BatchedRunner
from transrate_jax._src.registry import Metric
from transrate_jax._src.registry import describe_metrics
from transrate_jax._src.registry import get_metric
from transrate_jax._src.registry import register_metric
from transrate_jax._src.registry import registered_metrics
from transrate_jax._src.registry import unregister_metric

# Core TransRate.
from transrate_jax._src.transrate import coding_rate
from transrate_jax._src.transrate import transrate

# Sweeps, streaming, many devices.
from transrate_jax._src.sharding import transrate_sharded
from transrate_jax._src.streaming import TransRateStats
from transrate_jax._src.streaming import transrate_from_batches
from transrate_jax._src.sweep import score_many
from transrate_jax._src.sweep import transrate_many

# Regression and multi-label targets.
from transrate_jax._src.regression import MultilabelScore
from transrate_jax._src.regression import RegressionScore
from transrate_jax._src.regression import quantize_targets
from transrate_jax._src.regression import transrate_multilabel
from transrate_jax._src.regression import transrate_regression

# Differentiable TransRate.
from transrate_jax._src.regularizer import transrate_loss

# Peer metrics.
from transrate_jax._src.gbc import gbc
from transrate_jax._src.hscore import hscore
from transrate_jax._src.hscore import RegularizedHScoreDetails
from transrate_jax._src.hscore import regularized_hscore
from transrate_jax._src.hscore import regularized_hscore_details
from transrate_jax._src.leep import leep
from transrate_jax._src.leep import nce
from transrate_jax._src.leep import nleep
from transrate_jax._src.lfc import lfc
from transrate_jax._src.logme import LogMEDetails
from transrate_jax._src.logme import logme
from transrate_jax._src.logme import logme_details
from transrate_jax._src.parc import parc
from transrate_jax._src.sfda import sfda
from transrate_jax._src.etran import ETranDetails
from transrate_jax._src.etran import etran
from transrate_jax._src.etran import etran_details
from transrate_jax._src.etran import etran_scores
from transrate_jax._src.knn import knn_accuracy
from transrate_jax._src.knn import knn_predictions
from transrate_jax._src.ncti import NCTITerms
from transrate_jax._src.ncti import ncti
from transrate_jax._src.ncti import ncti_scores
from transrate_jax._src.ncti import ncti_terms

# Evaluation: how well do scores predict transfer accuracy?
from transrate_jax._src.evaluation import Interval
from transrate_jax._src.evaluation import PoolStatistics
from transrate_jax._src.evaluation import RandomBaseline
from transrate_jax._src.evaluation import bootstrap_interval
from transrate_jax._src.evaluation import kendall_tau
from transrate_jax._src.evaluation import pearson
from transrate_jax._src.evaluation import random_baseline
from transrate_jax._src.evaluation import relative_top_accuracy
from transrate_jax._src.evaluation import resampled_pools
from transrate_jax._src.evaluation import top1_regret
from transrate_jax._src.evaluation import top_k_hit
from transrate_jax._src.evaluation import weighted_tau

# Comparing metrics (intervals, baselines) and the library's measured recommendation.
from transrate_jax._src.compare import Comparison
from transrate_jax._src.compare import compare_metrics
from transrate_jax._src.compare import transrate_eps_sensitivity
from transrate_jax._src.recommend import Recommendation
from transrate_jax._src.recommend import rank_average
from transrate_jax._src.recommend import recommended

# Layer and model selection on Flax models, and the ground truth.
from transrate_jax._src.probe import linear_probe_accuracy
from transrate_jax._src.selection import SelectionResult
from transrate_jax._src.selection import layer_sweep
from transrate_jax._src.selection import rank_models
from transrate_jax._src.selection import width_fair_features

__version__ = "0.1.0"

__all__ = (
    "BatchedRunner",
    "bootstrap_interval",
    "coding_rate",
    "compare_metrics",
    "Comparison",
    "describe_metrics",
    "enable_compilation_cache",
    "etran",
    "etran_details",
    "etran_scores",
    "ETranDetails",
    "gbc",
    "get_metric",
    "hscore",
    "Interval",
    "kendall_tau",
    "knn_accuracy",
    "knn_predictions",
    "layer_sweep",
    "leep",
    "lfc",
    "linear_probe_accuracy",
    "logme",
    "logme_details",
    "LogMEDetails",
    "Metric",
    "MultilabelScore",
    "nce",
    "ncti",
    "ncti_scores",
    "ncti_terms",
    "NCTITerms",
    "nleep",
    "parc",
    "pearson",
    "PoolStatistics",
    "quantize_targets",
    "random_baseline",
    "RandomBaseline",
    "rank_average",
    "rank_models",
    "Recommendation",
    "recommended",
    "register_metric",
    "registered_metrics",
    "RegressionScore",
    "regularized_hscore",
    "regularized_hscore_details",
    "RegularizedHScoreDetails",
    "relative_top_accuracy",
    "resampled_pools",
    "score_many",
    "SelectionResult",
    "sfda",
    "top1_regret",
    "top_k_hit",
    "transrate",
    "transrate_eps_sensitivity",
    "transrate_from_batches",
    "transrate_loss",
    "transrate_many",
    "transrate_multilabel",
    "transrate_regression",
    "transrate_sharded",
    "TransRateStats",
    "unregister_metric",
    "weighted_tau",
    "width_fair_features",
)
