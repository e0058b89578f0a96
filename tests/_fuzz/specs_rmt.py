"""Fuzz entries for rmtjax.rmt: spectral measures (constructors and every method that takes user
input), free convolutions, Jacobian spectra, linear-width CK/NTK spectra, Gram-matrix deterministic
equivalents and the Frechet distance.

Checks are cheap invariants or independent references: Im G <= 0 above the axis (the physical
branch), densities >= 0, moments against closed forms, G(G^{-1}(g)) = g, the delta fixed-point
residual recomputed in NumPy, the Frechet distance and PSD square root recomputed with NumPy's
eigendecomposition. Entries that compile a solver (subordination, linear-width continuation, Gram
continuation) share one measure structure and grid shape, so the eager calls reuse one compiled
core, and draw few examples; those whose single first call takes several seconds are ``slow``.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st

from rmtjax import rmt
from rmtjax.activations import Erf, HardTanh, Relu, Tanh

from .harness import INF, NAN, Entry, array, number, sample, static_int

# ---------------------------------------------------------------------------------------------
# strategies
# ---------------------------------------------------------------------------------------------


def cpoints(shape=(3,), lo=-4.0, hi=8.0) -> st.SearchStrategy:
    """Complex points off the axis (mostly), real points (some on a support), and bad ones: NaN or
    inf in either part, booleans, strings, empty arrays, the wrong rank."""

    def valid(seed):
        rng = np.random.default_rng(seed)
        im = rng.uniform(0.05, 2.0, shape) * rng.choice([-1.0, 1.0], shape)
        return rng.uniform(lo, hi, shape) + 1j * im

    def real(seed):
        return np.random.default_rng(seed).uniform(lo, hi, shape)

    def poison(a, v):
        a = np.array(a, dtype=complex)
        a.flat[0] = v
        return a

    base = st.integers(0, 2**16).map(valid)
    bads = st.one_of(
        st.tuples(base, st.sampled_from([complex(NAN, 0.0), complex(1.0, INF), complex(INF, 1.0)])).map(
            lambda t: poison(*t)),
        base.map(lambda a: a.real > 0),
        st.just(np.zeros((0,), complex)),
        st.sampled_from(["1+1j", None]),
    )
    return st.one_of(base, base, base, st.integers(0, 2**16).map(real), bads)


def small_g(shape=(2,)) -> st.SearchStrategy:
    """Small complex arguments of inverse transforms (|g| in [0.02, 0.2], Im g != 0), and bad ones."""

    def valid(seed):
        rng = np.random.default_rng(seed)
        r, th = rng.uniform(0.02, 0.2, shape), rng.uniform(0.2, 2.9, shape) * rng.choice([-1.0, 1.0], shape)
        return r * np.exp(1j * th)

    base = st.integers(0, 2**16).map(valid)
    return st.one_of(base, base, base, st.sampled_from([np.zeros(shape, complex), np.full(shape, complex(NAN, 0)),
                                                         np.ones(shape) > 0, "g"]))


def grid(shape=(3,), lo=0.05, hi=6.0) -> st.SearchStrategy:
    """Real points (sorted, positive), with NaN/inf/complex/bool/wrong-rank/empty variants."""
    return array(shape, lo, hi).map(lambda a: np.sort(a) if isinstance(a, np.ndarray) and a.ndim == 1
                                    and np.isrealobj(a) and a.dtype != bool else a)


def complex_w_valid() -> np.ndarray:
    """Two small complex arguments of an S-transform, one in each half-plane, complex dtype like
    :func:`small_g`'s (for ``valid=``)."""
    return np.array([0.1 * np.exp(1j), 0.05 * np.exp(-2j)])


def positive(lo=0.05, hi=4.0) -> st.SearchStrategy:
    return number(lo, hi)


def psd_matrix(d=3, batch=()) -> st.SearchStrategy:
    """A A^T / d (PSD), plus asymmetric, indefinite, NaN, complex and wrong-shape ones."""

    def valid(seed):
        a = np.random.default_rng(seed).normal(size=batch + (d, d))
        return a @ np.swapaxes(a, -1, -2) / d

    base = st.integers(0, 2**16).map(valid)
    bads = st.one_of(
        base.map(lambda c: -c),
        base.map(lambda c: c + np.triu(np.ones_like(c), 1)),
        base.map(lambda c: np.where(np.eye(d, dtype=bool), NAN, c)),
        base.map(lambda c: c.astype(complex)),
        base.map(lambda c: c[..., :-1, :]),
        st.just(np.zeros(batch + (0, 0))),
    )
    return st.one_of(base, base, base, bads)


def activations() -> st.SearchStrategy:
    return st.one_of(st.sampled_from([Tanh(), Erf(), HardTanh(), Relu()]), st.sampled_from([None, "tanh", 1.0]))


ACT_SMOOTH = st.one_of(st.sampled_from([Tanh(), Erf()]), st.just(None))


# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------


def _np(x):
    return np.asarray(x)


def _physical_g(kwargs, out, name="z"):
    """Im G <= 0 where Im z > 0 and >= 0 where Im z < 0 (up to rounding)."""
    z = np.broadcast_to(np.asarray(kwargs[name], complex), np.shape(out))
    g = _np(out)
    s = np.sign(z.imag)
    assert np.all(g.imag * s <= 1e-9 * (1 + np.abs(g))), f"Im G has the sign of Im z: {g} at {z}"


def _nonneg(kwargs, out):
    d = _np(getattr(out, "density", out))
    assert np.all(d >= -1e-9 * (1 + np.max(np.abs(d)))), f"negative density {d.min()}"


def _mp_moment(kwargs, out):
    c, v, k = float(kwargs["ratio"]), float(kwargs["variance"]), kwargs["k"]
    if k == 0:
        ref = 1.0
    else:
        ref = v**k * sum(math.comb(k, j) * math.comb(k, j + 1) / k * c**j for j in range(k))
    val = float(out)
    if math.isfinite(ref):
        assert val == ref or abs(val - ref) <= 1e-10 * abs(ref), (val, ref)


def _sc_moment(kwargs, out):
    v, m, k = float(kwargs["variance"]), float(kwargs["center"]), kwargs["k"]
    ref = sum(math.comb(k, 2 * j) * math.comb(2 * j, j) / (j + 1) * v**j * m ** (k - 2 * j) for j in range(k // 2 + 1))
    if math.isfinite(ref) and abs(ref) < 1e300:
        scale = sum(math.comb(k, 2 * j) * math.comb(2 * j, j) / (j + 1) * v**j * abs(m) ** (k - 2 * j)
                    for j in range(k // 2 + 1))
        assert abs(float(out) - ref) <= 1e-10 * scale + 1e-300, (float(out), ref)


def _s_inverse_check(measure_fn):
    """psi(chi) = w at chi = S(w) w / (1 + w), the definition S(w) = (1 + w) / w psi^{-1}(w)."""

    def check(kwargs, out):
        w = np.asarray(kwargs["w"], complex)
        back = _np(measure_fn(kwargs).psi(_np(out) * w / (1 + w)))
        assert np.allclose(back, w, rtol=1e-7, atol=1e-12), (back, w)

    return check


def _inverse_check(measure_fn):
    def check(kwargs, out):
        m = measure_fn(kwargs)
        g = np.asarray(kwargs["g"], complex)
        back = _np(m.stieltjes(out))
        assert np.allclose(back, g, rtol=1e-7, atol=1e-9 * np.max(np.abs(g))), (back, g)

    return check


def _gram_residual(kwargs, out):
    """delta = (1/p) sum_i c_i / (n/p c_i / (1 + delta) + z) for one class with diagonal covariance."""
    c = np.asarray(kwargs["cov"], float)[0]
    p = c.shape[0]
    z = complex(kwargs["z"])
    d = complex(_np(out.value)[0])
    rhs = np.sum(c / (8 / p * c / (1 + d) + z)) / p
    assert abs(d - rhs) <= 1e-7 * (1 + abs(d)), (d, rhs)


def _frechet_ref(kwargs, out):
    m1, c1, m2, c2 = (np.asarray(kwargs[k], float) for k in ("mean1", "cov1", "mean2", "cov2"))

    def sqrtm(a):
        w, u = np.linalg.eigh(0.5 * (a + a.T))
        return (u * np.sqrt(np.maximum(w, 0))) @ u.T

    s1 = sqrtm(c1)
    ref = np.sum((m1 - m2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * np.trace(sqrtm(s1 @ c2 @ s1))
    scale = np.trace(c1) + np.trace(c2) + np.sum((m1 - m2) ** 2)
    assert abs(float(out) - max(ref, 0.0)) <= 1e-6 * scale + 1e-12, (float(out), ref)


def _sqrtm_check(kwargs, out):
    a = np.asarray(kwargs["a"], float)
    s = _np(out)
    assert np.allclose(s @ s, a, atol=1e-6 * np.max(np.abs(a)) + 1e-12), "psd_sqrtm(a)^2 != a"


def _positive_edge(kwargs, out):
    e = float(getattr(out, "value", out) if not isinstance(out, tuple) else out[0].value)
    assert e > 0, e


def _moments_ok(kwargs, out):
    """m_1 >= 0 and m_2 >= m_1^2 (Cauchy-Schwarz). m_1 may be exactly 0: with sigma_w2 = 1e-300 the
    Jacobian's moments (sigma_w2^depth) underflow, a correct finite value."""
    m = _np(out)
    assert m[0] >= 0 and m[1] >= m[0] ** 2 * (1 - 1e-6), m


# ---------------------------------------------------------------------------------------------
# entries
# ---------------------------------------------------------------------------------------------

MP = rmt.MarchenkoPastur
SC = rmt.Semicircle


def _disc(atoms, weights):
    return rmt.Discrete(atoms, weights)


def _grid_density(values):
    return rmt.GridDensity(np.linspace(-2.0, 2.0, 5), values)


ORDER = static_int(0, 12)

ENTRIES = [
    # --- constructors -------------------------------------------------------------------------
    Entry("rmt.MarchenkoPastur", lambda ratio, variance: MP(ratio, variance),
          {"ratio": positive(), "variance": positive()}),
    Entry("rmt.Semicircle", lambda variance, center: SC(variance, center),
          {"variance": positive(), "center": number(-3, 3)}),
    Entry("rmt.PointMass", lambda location: rmt.PointMass(location), {"location": number(-3, 3)}),
    Entry("rmt.Discrete", _disc, {"atoms": array((3,), -2, 3), "weights": array((3,), 0, 1)}),
    Entry("rmt.GridDensity", _grid_density, {"values": array((5,), 0, 1)}, names=("x",)),
    Entry("rmt.FussCatalan", lambda power, scale: rmt.FussCatalan(power, scale),
          {"power": static_int(1, 4), "scale": positive()}, static=("power",)),
    Entry("rmt.InputSpectrum", lambda eigenvalues, weights, ratio: rmt.InputSpectrum(eigenvalues, weights, ratio),
          {"eigenvalues": array((3,), 0, 3), "weights": st.one_of(st.none(), st.just(np.full(3, 1 / 3)),
                                                                  array((3,), 0, 1)),
           "ratio": st.one_of(st.none(), positive())}),
    Entry("rmt.GramMixture", lambda cov, means: rmt.GramMixture(cov, means, n_per_class=(4, 6)),
          {"cov": psd_matrix(3, (2,)), "means": array((2, 3))}),
    # --- closed-form measures: methods -----------------------------------------------------------
    Entry("rmt.MarchenkoPastur.stieltjes", lambda ratio, variance, z: MP(ratio, variance).stieltjes(z),
          {"ratio": positive(), "variance": positive(), "z": cpoints()}, check=_physical_g),
    Entry("rmt.MarchenkoPastur.density", lambda ratio, variance, x: MP(ratio, variance).density(x),
          {"ratio": positive(), "variance": positive(), "x": array((4,), -1, 8)}, check=_nonneg),
    Entry("rmt.MarchenkoPastur.moment", lambda ratio, variance, k: MP(ratio, variance).moment(k),
          {"ratio": positive(), "variance": positive(), "k": ORDER}, static=("k",), check=_mp_moment,
          allow_inf=("",)),
    Entry("rmt.MarchenkoPastur.moments", lambda ratio, order: MP(ratio).moments(order),
          {"ratio": positive(), "order": static_int(1, 8)}, static=("order",)),
    Entry("rmt.MarchenkoPastur.psi", lambda ratio, z: MP(ratio).psi(z), {"ratio": positive(), "z": cpoints(lo=-2, hi=2)}),
    Entry("rmt.MarchenkoPastur.r_transform", lambda ratio, g: MP(ratio).r_transform(g),
          {"ratio": positive(), "g": small_g()}),
    Entry("rmt.MarchenkoPastur.s_transform", lambda ratio, w: MP(ratio).s_transform(w),
          {"ratio": positive(), "w": cpoints(lo=0, hi=3)}),
    Entry("rmt.MarchenkoPastur.inverse_stieltjes", lambda ratio, g: MP(ratio).inverse_stieltjes(g),
          {"ratio": positive(0.2, 3.0), "g": small_g()}, max_examples=8,
          check=_inverse_check(lambda kw: MP(float(kw["ratio"])))),
    Entry("rmt.Semicircle.stieltjes", lambda variance, center, z: SC(variance, center).stieltjes(z),
          {"variance": positive(), "center": number(-2, 2), "z": cpoints()}, check=_physical_g),
    Entry("rmt.Semicircle.density", lambda variance, x: SC(variance).density(x),
          {"variance": positive(), "x": array((4,), -4, 4)}, check=_nonneg),
    Entry("rmt.Semicircle.moment", lambda variance, center, k: SC(variance, center).moment(k),
          {"variance": positive(), "center": number(-3, 3), "k": ORDER}, static=("k",), check=_sc_moment,
          allow_inf=("",)),
    Entry("rmt.Semicircle.r_transform", lambda variance, g: SC(variance).r_transform(g),
          {"variance": positive(), "g": small_g()}),
    Entry("rmt.Semicircle.s_transform", lambda variance, center, w: SC(variance, center).s_transform(w),
          {"variance": positive(0.05, 1.0), "center": number(-3, 6), "w": small_g()}, names=("measure",),
          check=_s_inverse_check(lambda kw: SC(kw["variance"], kw["center"])), max_examples=8,
          # support [3 - sqrt(2), 3 + sqrt(2)]; complex w: this example found that the numerical inverse of
          # psi rejected every complex w with G^{-1}'s branch test (fixed in rmt/_measures.py)
          valid=lambda: {"variance": 0.5, "center": 3.0, "w": complex_w_valid()}),
    Entry("rmt.PointMass.stieltjes", lambda location, z: rmt.PointMass(location).stieltjes(z),
          {"location": number(-3, 3), "z": cpoints()}, check=_physical_g),
    Entry("rmt.PointMass.s_transform", lambda location, w: rmt.PointMass(location).s_transform(w),
          {"location": number(-3, 3), "w": small_g()}, names=("measure",)),
    Entry("rmt.Discrete.stieltjes", lambda atoms, z: rmt.Discrete(atoms).stieltjes(z),
          {"atoms": array((3,), -2, 3), "z": cpoints()}, check=_physical_g),
    Entry("rmt.Discrete.moment", lambda atoms, weights, k: rmt.Discrete(atoms, weights).moment(k),
          {"atoms": array((3,), -2, 3), "weights": array((3,), 0, 1), "k": ORDER}, static=("k",), allow_inf=("",)),
    Entry("rmt.Discrete.psi", lambda atoms, z: rmt.Discrete(atoms).psi(z),
          {"atoms": array((3,), 0, 3), "z": cpoints(lo=-1, hi=1)}),
    Entry("rmt.Discrete.s_transform", lambda atoms, w: rmt.Discrete(atoms).s_transform(w),
          {"atoms": array((3,), 0.1, 3), "w": small_g()}, names=("measure",), max_examples=8,
          check=_s_inverse_check(lambda kw: rmt.Discrete(kw["atoms"])),
          valid=lambda: {"atoms": sample((3,), 0.1, 3), "w": complex_w_valid()}),
    Entry("rmt.GridDensity.stieltjes", lambda values, z: _grid_density(values).stieltjes(z),
          {"values": array((5,), 0, 1), "z": cpoints()}, check=_physical_g, names=("x",)),
    Entry("rmt.GridDensity.moment", lambda values, k: _grid_density(values).moment(k),
          {"values": array((5,), 0, 1), "k": ORDER}, static=("k",), names=("x",)),
    Entry("rmt.GridDensity.density", lambda values, x: _grid_density(values).density(x),
          {"values": array((5,), 0, 1), "x": array((3,), -3, 3)}, check=_nonneg, names=("x",)),
    Entry("rmt.FussCatalan.moment", lambda power, scale, k: rmt.FussCatalan(power, scale).moment(k),
          {"power": static_int(1, 4), "scale": positive(), "k": ORDER}, static=("power", "k"), allow_inf=("",)),
    Entry("rmt.FussCatalan.density", lambda scale, x: rmt.FussCatalan(2, scale).density(x),
          {"scale": positive(), "x": array((3,), -1, 8)}, check=_nonneg, max_examples=8),
    Entry("rmt.FussCatalan.stieltjes", lambda scale, z: rmt.FussCatalan(2, scale).stieltjes(z),
          {"scale": positive(0.2, 2.0), "z": cpoints()}, check=_physical_g, max_examples=8),
    Entry("rmt.stieltjes_inversion", lambda ratio, x, eta, richardson: rmt.stieltjes_inversion(MP(ratio), x, eta=eta,
                                                                                           richardson=richardson),
          {"ratio": positive(), "x": array((3,), -1, 6), "eta": number(1e-6, 1.0),
           "richardson": st.sampled_from([False, True, 1, None])}, static=("richardson",), check=_nonneg),
    # --- free convolutions (one structure and grid shape each: the eager calls share a core) ------
    Entry("rmt.free_additive_convolution", lambda v1, v2: rmt.free_additive_convolution(SC(v1), SC(v2)).moments(4),
          {"v1": positive(), "v2": positive()}, names=("variance",), max_examples=6),
    Entry("rmt.free_additive_power", lambda v, n: rmt.free_additive_power(SC(v), n).moments(2),
          {"v": positive(), "n": static_int(1, 5)}, static=("n",), names=("variance",), max_examples=6),
    Entry("rmt.free_multiplicative_convolution",
          lambda c1, c2: rmt.free_multiplicative_convolution(MP(c1), MP(c2)).moments(3),
          {"c1": positive(), "c2": positive()}, names=("ratio",), max_examples=6),
    Entry("rmt.free_multiplicative_power", lambda c, n: rmt.free_multiplicative_power(MP(c), n).moments(3),
          {"c": positive(), "n": static_int(1, 5)}, static=("n",), names=("ratio",), max_examples=6),
    Entry("rmt.FreeAdditiveConvolution.density_on_grid",
          lambda v1, v2, x: rmt.free_additive_convolution(SC(v1), SC(v2)).density_on_grid(x),
          {"v1": positive(0.2, 2.0), "v2": positive(0.2, 2.0), "x": array((3,), -4, 4)}, names=("variance",),
          check=_nonneg, max_examples=6, slow=True),
    Entry("rmt.FreeAdditiveConvolution.stieltjes",
          lambda v1, v2, z: rmt.free_additive_convolution(SC(v1), SC(v2)).stieltjes(z),
          {"v1": positive(0.2, 2.0), "v2": positive(0.2, 2.0), "z": cpoints(lo=-4, hi=4)}, names=("variance",),
          check=_physical_g, max_examples=6, slow=True),
    Entry("rmt.FreeAdditiveConvolution.solve",
          lambda v1, v2, z: rmt.free_additive_convolution(SC(v1), SC(v2)).solve(z, throw=False),
          {"v1": positive(0.2, 2.0), "v2": positive(0.2, 2.0), "z": cpoints(lo=-4, hi=4)}, names=("variance",),
          ok=lambda out: out[1], max_examples=6, slow=True),
    Entry("rmt.FreeMultiplicativeConvolution.density_on_grid",
          lambda c1, c2, x: rmt.free_multiplicative_convolution(MP(c1), MP(c2)).density_on_grid(x, throw=False),
          {"c1": positive(0.2, 2.0), "c2": positive(0.2, 2.0), "x": array((3,), 0.01, 12)}, names=("ratio",),
          ok=lambda out: out.ok, check=_nonneg, max_examples=6, slow=True),
    Entry("rmt.FreeMultiplicativeConvolution.moments_by_contour",
          lambda c, order: rmt.free_multiplicative_power(MP(c), 2).moments_by_contour(order),
          {"c": positive(0.2, 2.0), "order": static_int(1, 4)}, static=("order",), names=("ratio",), max_examples=6,
          slow=True),
    # --- Jacobian spectra -------------------------------------------------------------------------
    Entry("rmt.jacobian_q_star", lambda activation, sigma_w2, sigma_b2: rmt.jacobian_q_star(activation, sigma_w2,
                                                                                            sigma_b2),
          {"activation": st.one_of(st.sampled_from([Erf(), HardTanh()]), st.sampled_from([None, "erf"])),
           "sigma_w2": number(0, 4), "sigma_b2": number(0, 1)},
          check=lambda kw, out: None if float(out) >= 0 else (_ for _ in ()).throw(AssertionError(float(out)))),
    Entry("rmt.derivative_squared_law", lambda activation, q: rmt.derivative_squared_law(activation, q).moments(2),
          {"activation": activations(), "q": number(0, 5)}),
    Entry("rmt.jacobian_law", lambda activation, sigma_w2, sigma_b2, depth: rmt.jacobian_law(
        activation, sigma_w2, sigma_b2, depth=depth).moments(2),
          {"activation": st.sampled_from([Erf(), HardTanh(), Relu()]), "sigma_w2": number(0, 3),
           "sigma_b2": number(0, 0.5), "depth": st.one_of(st.just(3), st.just(3), st.sampled_from([0, 2.5, True]))},
          static=("depth",), check=_moments_ok, max_examples=8,
          valid=lambda: {"activation": Erf(), "sigma_w2": 1.0, "sigma_b2": 0.1, "depth": 3}),
    Entry("rmt.multiplicative_edge", lambda c1, c2: rmt.multiplicative_edge(
        rmt.free_multiplicative_convolution(MP(c1), MP(c2))), {"c1": positive(0.2, 3), "c2": positive(0.2, 3)},
          names=("ratio",), check=_positive_edge, max_examples=6, slow=True),
    Entry("rmt.jacobian_spectrum", lambda sigma_w2, x: rmt.jacobian_spectrum(HardTanh(), sigma_w2, 0.05, x, depth=3,
                                                                             orthogonal=True, throw=False),
          {"sigma_w2": number(0.3, 3), "x": array((3,), 0.01, 6)}, ok=lambda out: out.converged,
          max_examples=6, slow=True),
    # --- linear-width CK/NTK ----------------------------------------------------------------------
    Entry("rmt.activation_constants", lambda activation: rmt.activation_constants(activation),
          {"activation": activations()}, check=lambda kw, out: None if 0 <= float(out.b2) <= 1 + 1e-9 else
          (_ for _ in ()).throw(AssertionError(out))),
    Entry("rmt.ntk_coefficients", lambda activation, depth: rmt.ntk_coefficients(activation, depth),
          {"activation": activations(), "depth": static_int(1, 5)}, static=("depth",)),
    Entry("rmt.marchenko_pastur_input", lambda ratio: rmt.marchenko_pastur_input(ratio), {"ratio": positive()}),
    Entry("rmt.empirical_input", lambda x: rmt.empirical_input(x), {"x": array((4, 3))}),
    Entry("rmt.ck_stieltjes", lambda ratio, gammas, z: rmt.ck_stieltjes(rmt.marchenko_pastur_input(ratio), gammas,
                                                                        Tanh(), z),
          {"ratio": positive(0.2, 2.0), "gammas": array((2,), 0.2, 2.0), "z": cpoints(lo=-2, hi=6)},
          check=lambda kw, out: _physical_g({"z": np.conj(np.asarray(kw["z"], complex))}, out),
          max_examples=6, slow=True),
    Entry("rmt.ck_density", lambda ratio, gammas, x: rmt.ck_density(rmt.marchenko_pastur_input(ratio), gammas,
                                                                    Tanh(), x),
          {"ratio": positive(0.2, 2.0), "gammas": array((2,), 0.2, 2.0), "x": array((3,), 0.01, 6)},
          check=_nonneg, max_examples=6, slow=True),
    Entry("rmt.ntk_density", lambda gammas, x: rmt.ntk_density(rmt.marchenko_pastur_input(0.8), gammas, Tanh(), x),
          {"gammas": array((2,), 0.2, 2.0), "x": array((3,), 0.01, 8)}, check=_nonneg, max_examples=6, slow=True),
    Entry("rmt.ntk_stieltjes", lambda gammas, z: rmt.ntk_stieltjes(rmt.marchenko_pastur_input(0.8), gammas, Tanh(), z),
          {"gammas": array((2,), 0.2, 2.0), "z": cpoints(lo=-2, hi=8)},
          check=lambda kw, out: _physical_g({"z": np.conj(np.asarray(kw["z"], complex))}, out),
          max_examples=6, slow=True),
    Entry("rmt.combination_density",
          lambda b2, shift, coef, x: rmt.combination_density(rmt.marchenko_pastur_input(0.5), np.array([0.8]), b2,
                                                             shift, coef, x),
          {"b2": number(0, 1), "shift": number(0, 2), "coef": array((2,), 0, 2), "x": array((3,), 0.01, 6)},
          check=_nonneg, max_examples=6, slow=True),
    Entry("rmt.combination_stieltjes",
          lambda b2, coef, z: rmt.combination_stieltjes(rmt.marchenko_pastur_input(0.5), np.array([0.8]), b2, 0.3,
                                                        coef, z),
          {"b2": number(0, 1), "coef": array((2,), 0, 2), "z": cpoints(lo=-2, hi=6)},
          check=lambda kw, out: _physical_g({"z": np.conj(np.asarray(kw["z"], complex))}, out),
          max_examples=6, slow=True),
    Entry("rmt.ck_moments", lambda gammas, order: rmt.ck_moments(rmt.marchenko_pastur_input(0.8), gammas, Tanh(),
                                                                 order=order),
          {"gammas": array((2,), 0.2, 2.0), "order": static_int(2, 4)}, static=("order",), check=_moments_ok,
          max_examples=6, slow=True),
    Entry("rmt.ntk_moments", lambda gammas: rmt.ntk_moments(rmt.marchenko_pastur_input(0.8), gammas, Tanh(), order=2),
          {"gammas": array((2,), 0.2, 2.0)}, check=_moments_ok, max_examples=6, slow=True),
    Entry("rmt.combination_moments",
          lambda coef: rmt.combination_moments(rmt.marchenko_pastur_input(0.5), np.array([0.8]), 0.4, 0.1, coef,
                                               order=2),
          {"coef": array((2,), 0.1, 2)}, max_examples=6, slow=True),
    Entry("rmt.ck_edge", lambda gammas: rmt.ck_edge(rmt.marchenko_pastur_input(0.8), gammas, Tanh()),
          {"gammas": array((2,), 0.2, 2.0)}, check=_positive_edge, max_examples=5, slow=True),
    Entry("rmt.ntk_edge", lambda gammas: rmt.ntk_edge(rmt.marchenko_pastur_input(0.8), gammas, Tanh()),
          {"gammas": array((2,), 0.2, 2.0)}, check=_positive_edge, max_examples=5, slow=True),
    Entry("rmt.combination_edge",
          lambda coef: rmt.combination_edge(rmt.marchenko_pastur_input(0.5), np.array([0.8]), 0.4, 0.1, coef),
          {"coef": array((2,), 0.1, 2)}, check=_positive_edge, max_examples=5, slow=True),
    Entry("rmt.max_stable_learning_rate",
          lambda gammas: rmt.max_stable_learning_rate(rmt.marchenko_pastur_input(0.8), gammas, Tanh()),
          {"gammas": array((2,), 0.2, 2.0)}, check=_positive_edge, max_examples=5, slow=True),
    Entry("rmt.finite_network_kernels",
          lambda x, seed, widths: rmt.finite_network_kernels(x, __import__("jax").random.key(seed), widths, Tanh()),
          {"x": array((4, 3)), "seed": st.integers(0, 100),
           "widths": st.one_of(st.sampled_from([(5,), (5, 6)]), st.sampled_from([(), (0,), (5, 2.5), (True,), None]))},
          static=("widths",), names=("key",)),
    # --- Gram-matrix equivalents ------------------------------------------------------------------
    Entry("rmt.gram_delta", lambda cov, z: rmt.gram_delta(rmt.GramMixture(cov, n_per_class=(8,)), z),
          {"cov": array((1, 5), 0.1, 3), "z": st.one_of(number(-2, 5), st.sampled_from([1 + 1j, -1 + 0.5j]))},
          check=_gram_residual, valid=lambda: {"cov": sample((1, 5), 0.1, 3), "z": 1.0}),
    Entry("rmt.gram_resolvent", lambda cov, z: rmt.gram_resolvent(rmt.GramMixture(cov, n_per_class=(8,)), z),
          {"cov": array((1, 5), 0.1, 3), "z": number(-2, 5)}, valid=lambda: {"cov": sample((1, 5), 0.1, 3), "z": 1.0}),
    Entry("rmt.gram_trace_resolvent",
          lambda cov, z, throw: rmt.gram_trace_resolvent(rmt.GramMixture(cov, n_per_class=(8,)), z, throw=throw),
          {"cov": array((1, 5), 0.1, 3), "z": number(-2, 5), "throw": st.just(True)}, static=("throw",),
          valid=lambda: {"cov": sample((1, 5), 0.1, 3), "z": 1.0, "throw": True}),
    Entry("rmt.gram_spectral_density",
          lambda cov, x: rmt.gram_spectral_density(rmt.GramMixture(cov, n_per_class=(8,)), x, n_heights=8),
          {"cov": array((1, 5), 0.1, 3), "x": array((3,), 0.01, 6)}, check=_nonneg, max_examples=6),
    Entry("rmt.gram_spikes",
          lambda means: rmt.gram_spikes(rmt.GramMixture(np.ones((2, 6)), means, n_per_class=(8, 8)), n_grid=16,
                                        n_bisect=12, throw=False),
          {"means": array((2, 6), -3, 3)}, ok=lambda out: out.ok, max_examples=6, slow=True),
    Entry("rmt.frechet_distance", lambda mean1, cov1, mean2, cov2: rmt.frechet_distance(mean1, cov1, mean2, cov2),
          {"mean1": array((3,)), "cov1": psd_matrix(), "mean2": array((3,)), "cov2": psd_matrix()},
          check=_frechet_ref),
    Entry("rmt.psd_sqrtm", lambda a: rmt.psd_sqrtm(a), {"a": psd_matrix()}, check=_sqrtm_check),
]

# the sweep API of gram_delta: with throw=False, bad z (negative real, NaN) are reported through ok
ENTRIES.append(Entry("rmt.gram_delta", lambda z: rmt.gram_delta(rmt.GramMixture(np.ones((1, 5)), n_per_class=(8,)), z,
                                                                 throw=False),
                     {"z": number(-2, 5)}, ok=lambda out: out.ok))

def _learning_curve_check(kwargs, out):
    """Errors are non-negative, learnabilities in [0, 1], and kappa solves its equation."""
    lam = np.asarray(kwargs["eigenvalues"], dtype=float)
    for a in (out.test_error, out.train_error, out.kappa):
        assert np.all(np.asarray(a) >= -1e-12), a
    L = np.asarray(out.learnability)
    assert np.all((L >= 0) & (L <= 1 + 1e-12)), L
    k = float(np.asarray(out.kappa).reshape(-1)[0])
    n = float(np.asarray(kwargs["n"]).reshape(-1)[0])
    lhs = np.sum(lam / (lam + k)) + float(kwargs["ridge"]) / k
    assert abs(lhs - n) <= 1e-6 * n, (lhs, n)


ENTRIES += [
    Entry("rmt.krr_learning_curve",
          lambda eigenvalues, target, n, ridge, noise: rmt.krr_learning_curve(eigenvalues, target, n, ridge, noise),
          {"eigenvalues": array((5,), 0.0, 2.0), "target": array((5,)), "n": number(1.0, 20.0),
           "ridge": number(0.0, 1.0), "noise": number(0.0, 1.0)},
          names=("eigenvalues", "target", "n", "ridge", "noise"), check=_learning_curve_check, max_examples=12,
          valid=lambda: {"eigenvalues": np.array([1.0, 0.5, 0.25, 0.1, 0.05]), "target": np.ones(5), "n": 3.0,
                         "ridge": 0.1, "noise": 0.1}),
    Entry("rmt.population_eigensystem", lambda gram, values: rmt.population_eigensystem(gram, values),
          {"gram": array((4, 4)), "values": array((4,))}, names=("gram", "values"), max_examples=8,
          valid=lambda: {"gram": np.eye(4) + 0.5, "values": np.arange(4.0)}),
]

def _rf_ridge_check(kwargs, out):
    """Errors are >= 0, test error = bias + variance, and delta solves its equation (recomputed in
    NumPy from the ReLU arc-cosine kernel)."""
    for a in (out.test_error, out.train_error, out.bias, out.variance, out.delta):
        assert float(a) >= -1e-12, a
    assert abs(float(out.test_error) - float(out.bias) - float(out.variance)) <= 1e-9 * (1 + float(out.test_error))
    x = np.asarray(kwargs["x"], float)
    d = x.shape[1]
    w2, b2 = float(kwargs["W_std"]) ** 2, float(kwargs["b_std"]) ** 2
    q = w2 * np.sum(x * x, 1) / d + b2
    s = np.sqrt(np.outer(q, q))
    c = np.clip(np.where(s > 0, (w2 * x @ x.T / d + b2) / np.where(s > 0, s, 1), 1.0), -1, 1)
    th = np.arccos(c)
    phi = s * (np.sin(th) + (np.pi - th) * c) / (2 * np.pi)
    T, N, ridge, delta = len(x), float(kwargs["features"]), float(kwargs["ridge"]), float(out.delta)
    rhs = np.trace(phi @ np.linalg.inv(N / T * phi / (1 + delta) + ridge * np.eye(T))) / T
    assert abs(delta - rhs) <= 1e-7 * (1 + abs(delta)), (delta, rhs)


def _rf_risk_check(kwargs, out):
    """Bias and variance >= 0, chi < 0, and the risk at noise 0, nonlinear 0 is signal * bias."""
    assert float(out.bias) >= -1e-12 and float(out.variance) >= -1e-12, out
    assert float(out.chi) < 0, out.chi


ENTRIES += [
    Entry("rmt.random_features_ridge",
          lambda x, y, features, ridge, W_std, b_std: rmt.random_features_ridge(
              x, y, x[:3], y[:3], Relu(), features=features, ridge=ridge, W_std=W_std, b_std=b_std),
          {"x": array((6, 3)), "y": array((6,)), "features": number(0.5, 50.0), "ridge": number(0.0, 2.0),
           "W_std": number(0.0, 3.0), "b_std": number(0.0, 1.0)},
          names=("x", "y", "features", "ridge", "W_std", "b_std"), check=_rf_ridge_check, max_examples=10,
          valid=lambda: {"x": np.arange(18.0).reshape(6, 3) / 10, "y": np.arange(6.0), "features": 10.0,
                         "ridge": 0.1, "W_std": 1.0, "b_std": 0.1}),
    Entry("rmt.random_features_risk",
          lambda activation, psi1, psi2, ridge, noise: rmt.random_features_risk(activation, psi1, psi2, ridge,
                                                                                 noise=noise),
          {"activation": st.sampled_from([Relu(), Erf(), Tanh()]), "psi1": number(0.0, 5.0),
           "psi2": number(0.0, 5.0), "ridge": number(0.0, 2.0), "noise": number(0.0, 1.0)},
          names=("psi1", "psi2", "ridge", "noise"), check=_rf_risk_check, max_examples=10,
          valid=lambda: {"activation": Relu(), "psi1": 1.5, "psi2": 2.0, "ridge": 0.1, "noise": 0.1}),
]

EXEMPT = {
    "rmt.LearningCurve": "result container (NamedTuple)",
    "rmt.RandomFeaturesRidge": "result container (NamedTuple)",
    "rmt.RandomFeaturesRisk": "result container (NamedTuple)",
    "rmt.AbstractMeasure": "abstract base (its methods are fuzzed on every concrete measure)",
    "rmt.Empirical": "alias of rmt.Discrete",
    "rmt.HardTanh": "re-export of activations.HardTanh (fuzzed through jacobian_q_star and jacobian_spectrum)",
    "rmt.ActivationConstants": "result container (NamedTuple)",
    "rmt.FiniteKernels": "result container (NamedTuple)",
    "rmt.FreeDensity": "result container (NamedTuple)",
    "rmt.GramDensity": "result container (NamedTuple)",
    "rmt.GramResolvent": "result container (NamedTuple)",
    "rmt.GramSpikes": "result container (NamedTuple)",
    "rmt.JacobianSpectrum": "result container (NamedTuple)",
    "rmt.NTKCoefficients": "result container (NamedTuple)",
}
