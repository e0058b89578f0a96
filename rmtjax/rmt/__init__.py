"""Spectral laws and deterministic equivalents of random matrices.

* Spectral measures and their transforms (:class:`MarchenkoPastur`, :class:`Semicircle`, :class:`FussCatalan`,
  :class:`PointMass`, :class:`Discrete`, :class:`Empirical`, :class:`GridDensity`): Stieltjes, R- and
  S-transforms, moments, densities by Stieltjes inversion.
* Free additive and multiplicative convolution by subordination (:func:`free_additive_convolution`,
  :func:`free_multiplicative_convolution` and their powers), solved through :mod:`rmtjax.solve`.
* Jacobian spectra of deep networks at initialization and dynamical isometry (Pennington, Schoenholz &
  Ganguli 2017, 2018): :func:`jacobian_spectrum`, :func:`jacobian_law`, :func:`multiplicative_edge`.
* CK and NTK spectra of linear-width networks (Fan & Wang 2020): :func:`ck_density`, :func:`ntk_density`,
  edges, moments, :func:`max_stable_learning_rate`.
* Deterministic equivalents of Gram matrices of mixtures (Seddik et al. 2020): :func:`gram_delta`,
  :func:`gram_trace_resolvent`, :func:`gram_spectral_density`; the Frechet distance between Gaussians
  (:func:`frechet_distance`, the FID formula), differentiable.
* Learning curves of kernel ridge regression (:func:`krr_learning_curve`, eigenlearning) and the
  test error of random-features ridge regression, on given data (:func:`random_features_ridge`,
  Louart, Liao & Couillet 2018) and in the proportional limit (:func:`random_features_risk`, Mei &
  Montanari: the double descent curve).
"""

from ._measures import AbstractMeasure as AbstractMeasure
from ._measures import Discrete as Discrete
from ._measures import Empirical as Empirical
from ._measures import FussCatalan as FussCatalan
from ._measures import GridDensity as GridDensity
from ._measures import MarchenkoPastur as MarchenkoPastur
from ._measures import PointMass as PointMass
from ._measures import Semicircle as Semicircle
from ._measures import stieltjes_inversion as stieltjes_inversion
from ._free import FreeAdditiveConvolution as FreeAdditiveConvolution
from ._free import FreeDensity as FreeDensity
from ._free import FreeMultiplicativeConvolution as FreeMultiplicativeConvolution
from ._free import free_additive_convolution as free_additive_convolution
from ._free import free_additive_power as free_additive_power
from ._free import free_multiplicative_convolution as free_multiplicative_convolution
from ._free import free_multiplicative_power as free_multiplicative_power
from ._jacobian import HardTanh as HardTanh
from ._jacobian import JacobianSpectrum as JacobianSpectrum
from ._jacobian import derivative_squared_law as derivative_squared_law
from ._jacobian import jacobian_law as jacobian_law
from ._jacobian import jacobian_q_star as jacobian_q_star
from ._jacobian import jacobian_spectrum as jacobian_spectrum
from ._jacobian import multiplicative_edge as multiplicative_edge
from ._linear_width import ActivationConstants as ActivationConstants
from ._linear_width import FiniteKernels as FiniteKernels
from ._linear_width import InputSpectrum as InputSpectrum
from ._linear_width import NTKCoefficients as NTKCoefficients
from ._linear_width import activation_constants as activation_constants
from ._linear_width import ck_density as ck_density
from ._linear_width import ck_edge as ck_edge
from ._linear_width import ck_moments as ck_moments
from ._linear_width import ck_stieltjes as ck_stieltjes
from ._linear_width import combination_density as combination_density
from ._linear_width import combination_edge as combination_edge
from ._linear_width import combination_moments as combination_moments
from ._linear_width import combination_stieltjes as combination_stieltjes
from ._linear_width import empirical_input as empirical_input
from ._linear_width import finite_network_kernels as finite_network_kernels
from ._linear_width import marchenko_pastur_input as marchenko_pastur_input
from ._linear_width import max_stable_learning_rate as max_stable_learning_rate
from ._linear_width import ntk_coefficients as ntk_coefficients
from ._linear_width import ntk_density as ntk_density
from ._linear_width import ntk_edge as ntk_edge
from ._linear_width import ntk_moments as ntk_moments
from ._linear_width import ntk_stieltjes as ntk_stieltjes
from ._frechet import frechet_distance as frechet_distance
from ._frechet import psd_sqrtm as psd_sqrtm
from ._gram import GramDensity as GramDensity
from ._gram import GramMixture as GramMixture
from ._gram import GramResolvent as GramResolvent
from ._gram import GramSpikes as GramSpikes
from ._gram import gram_delta as gram_delta
from ._gram import gram_resolvent as gram_resolvent
from ._gram import gram_spikes as gram_spikes
from ._gram import gram_spectral_density as gram_spectral_density
from ._gram import gram_trace_resolvent as gram_trace_resolvent
from ._learning_curves import LearningCurve as LearningCurve
from ._learning_curves import krr_learning_curve as krr_learning_curve
from ._learning_curves import population_eigensystem as population_eigensystem
from ._random_features import RandomFeaturesRidge as RandomFeaturesRidge
from ._random_features import RandomFeaturesRisk as RandomFeaturesRisk
from ._random_features import random_features_ridge as random_features_ridge
from ._random_features import random_features_risk as random_features_risk
