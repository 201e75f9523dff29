"""The training loss of Lindgren and Zach (2022), Section 3.1, Equations 1 to 5.

With ``x_ok`` a clean 192 x 192 patch, ``x_per = x_ok + W * delta`` its perturbed version
(Equation 2) and ``t`` the central 156 x 156 of ``x_ok`` (the aperture the model reconstructs)::

    D_ok  = t - D(E(x_ok))          D_per = t - D(E(x_per))                          (1)
    L_ok  = 1/n sum_p sum_lm D_ok^2          (L_per analogous with D_per)            (3)
    L_kern,ok = 1/n sum_p max_lm [ (1/ks^2) sum_9x9 D_ok ]^2  (L_kern,per analogous)  (4)
    L_reg = 0.01 * sum |z|                   (for both encoder passes)
    L = L_ok + L_per + L_kern,ok + L_kern,per + L_reg                                 (5)

The kernel means are taken where the whole 9 x 9 kernel lies inside the aperture (148 x 148
positions). L_reg follows Keras' activity regulariser: summed over the latent of each patch and
averaged over the patches of the batch, once for the clean and once for the perturbed pass.

Weights (``LossWeights``)
-------------------------
Taken literally (``LossWeights.paper()``), Equation 3 sums over 156 * 156 = 24,336 pixels while
Equation 4 is a single squared mean per patch: for a residual that is the same everywhere both
are ``a^2`` per pixel, so the kernel terms weigh 1/24,336 (about 4e-5) of the pixel terms and
change nothing. ``LossWeights.default()`` therefore uses per-pixel means for Equation 3
(``pixel_reduction="mean"``, i.e. Equation 3 divided by 24,336) and weight 1 on the kernel terms:

- a uniform error of amplitude ``a`` then costs ``a^2`` in the pixel and in the kernel term
  alike, so neither term swamps the other on smooth errors;
- an error of amplitude ``a`` confined to one 9 x 9 kernel costs ``a^2 * 81 / 24,336 = a^2 / 300``
  in the pixel term but ``a^2`` in the kernel term: the local max norm dominates exactly on the
  compact, defect-sized errors it was added for (the paper's "harder objective").

L_reg: in the same per-pixel units the paper's literal weight is
``0.01 * 1764 / 24,336 = 7.2e-4`` per unit mean |z|. With radiographs on [0, 1] and z about 0.3
that is about 2e-4, above a well-fitted L_ok (1e-4 for a 1 % grey-level residual), which contradicts
the paper's stated intent that L_reg be of low importance (their intensity scale is not given).
The default uses a tenth of it, ``reg = 7.2e-5`` per unit mean |z|: for z about 0.3 and a 1 %
residual L_reg is then about 20 % of L_ok, present but subordinate (an estimate from those
assumed figures, not yet measured on a converged model). It also pushes z towards 0 less, which
is what kills a bounded ReLU latent (core.model, "Dead latent").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from core.model import APERTURE, L1_LATENT, LATENT

KERNEL_SIZE = 9  # k_s of Equations 4, 8 and 9
TERMS = ("ok", "per", "kern_ok", "kern_per", "reg")
_PIXELS = APERTURE * APERTURE
_LATENTS = LATENT * LATENT


@dataclass(frozen=True)
class LossWeights:
    """Weights of the five terms of Equation 5 and how Equation 3 is reduced over pixels.

    Attributes
    ----------
    ok, per, kern_ok, kern_per : float
        Weights of L_ok, L_per, L_kern,ok, L_kern,per.
    reg : float
        Weight on the per-patch latent L1 term. With ``reg_reduction="sum"`` it multiplies
        ``sum |z|`` (0.01 in the paper); with ``"mean"`` it multiplies ``mean |z|``.
    pixel_reduction, reg_reduction : {"sum", "mean"}
        ``"sum"`` is Equation 3 / L_reg literally; ``"mean"`` divides by the pixel (latent) count.
    """

    ok: float = 1.0
    per: float = 1.0
    kern_ok: float = 1.0
    kern_per: float = 1.0
    reg: float = L1_LATENT * _LATENTS / _PIXELS / 10.0
    pixel_reduction: str = "mean"
    reg_reduction: str = "mean"

    def __post_init__(self):
        for name in ("pixel_reduction", "reg_reduction"):
            if getattr(self, name) not in ("sum", "mean"):
                raise ValueError(f"LossWeights.{name} must be 'sum' or 'mean', not {getattr(self, name)!r}")

    @classmethod
    def paper(cls) -> LossWeights:
        """Equations 3 to 5 literally: pixel sums, unit kernel weights, 0.01 * sum |z|."""
        return cls(reg=L1_LATENT, pixel_reduction="sum", reg_reduction="sum")

    @classmethod
    def default(cls) -> LossWeights:
        """Per-pixel means, kernel weights 1, a tenth of the paper's L_reg (module docstring)."""
        return cls()

    @classmethod
    def from_name(cls, name: str) -> LossWeights:
        if name not in ("paper", "default"):
            raise ValueError(f"loss weights preset must be 'paper' or 'default', not {name!r}")
        return getattr(cls, name)()

    def with_per_weight(self, weight: float) -> LossWeights:
        """These weights with ``weight`` on both perturbed terms, L_per and L_kern,per."""
        return replace(self, per=float(weight), kern_per=float(weight))

    def to_dict(self) -> dict:
        return asdict(self)


def kernel_means(diff, ks: int = KERNEL_SIZE):
    """Local ``ks x ks`` means of ``diff`` where the whole kernel fits (valid positions).

    Parameters
    ----------
    diff : tf.Tensor of shape (B, M, N, 1)
    ks : int

    Returns
    -------
    tf.Tensor of shape (B, M - ks + 1, N - ks + 1, 1)
    """
    import tensorflow as tf

    # two separable box convolutions: the same numbers as avg_pool2d(ks, VALID), but forward +
    # backward take 0.018 s instead of 0.25 s for 32 patches on 2 CPU cores (measured)
    diff = tf.cast(diff, tf.float32)
    rows = tf.fill((ks, 1, 1, 1), 1.0 / ks)
    cols = tf.fill((1, ks, 1, 1), 1.0 / ks)
    return tf.nn.conv2d(tf.nn.conv2d(diff, rows, 1, "VALID"), cols, 1, "VALID")


def crop_target(x_ok):
    """Central ``APERTURE x APERTURE`` of 192 x 192 patches ``(B, 192, 192, 1)``: the loss target."""
    off = (x_ok.shape[1] - APERTURE) // 2
    return x_ok[:, off : off + APERTURE, off : off + APERTURE, :]


def ood_loss_terms(x_ok_target, r_ok, r_per, z_ok, z_per, weights: LossWeights | None = None) -> dict:
    """The five weighted loss terms of Equation 5 and their sum.

    Parameters
    ----------
    x_ok_target : tf.Tensor of shape (B, 156, 156, 1)
        Central aperture of the clean patches (``crop_target``): the target of both passes.
    r_ok, r_per : tf.Tensor of shape (B, 156, 156, 1)
        Reconstructions of the clean and of the perturbed patches.
    z_ok, z_per : tf.Tensor of shape (B, 42, 42, 1)
        Latents of the two passes.
    weights : LossWeights, optional
        ``LossWeights.default()`` when omitted.

    Returns
    -------
    dict
        ``ok, per, kern_ok, kern_per, reg`` (each already weighted) and ``total``; float32 scalars.
    """
    ok = pass_terms(x_ok_target, r_ok, z_ok, weights, which="ok")
    per = pass_terms(x_ok_target, r_per, z_per, weights, which="per")
    terms = {
        "ok": ok["pixel"], "per": per["pixel"], "kern_ok": ok["kern"], "kern_per": per["kern"],
        "reg": ok["reg"] + per["reg"],
    }
    import tensorflow as tf

    terms["total"] = tf.add_n([terms[k] for k in TERMS])
    return terms


def pass_terms(x_ok_target, r, z, weights: LossWeights | None = None, *, which: str) -> dict:
    """The weighted terms of one encoder-decoder pass: ``pixel``, ``kern``, ``reg`` and ``total``.

    ``which="ok"`` gives L_ok, L_kern,ok and the clean pass's half of L_reg; ``"per"`` the
    perturbed pass's. Equation 5 is the sum of both passes' totals, so the two passes can be
    differentiated one after the other (half the activation memory) with the same gradients.
    """
    import tensorflow as tf

    w = weights or LossWeights.default()
    if which not in ("ok", "per"):
        raise ValueError(f"which must be 'ok' or 'per', not {which!r}")
    f32 = tf.float32
    d = tf.cast(x_ok_target, f32) - tf.cast(r, f32)
    per_patch = tf.reduce_sum(tf.square(d), axis=[1, 2, 3])
    if w.pixel_reduction == "mean":
        per_patch = per_patch / float(_PIXELS)
    pixel = tf.reduce_mean(per_patch)
    kern = tf.reduce_mean(tf.reduce_max(tf.square(kernel_means(d)), axis=[1, 2, 3]))
    za = tf.abs(tf.cast(z, f32))
    l1 = tf.reduce_mean(za, axis=[1, 2, 3]) if w.reg_reduction == "mean" else tf.reduce_sum(za, axis=[1, 2, 3])
    out = {
        "pixel": (w.ok if which == "ok" else w.per) * pixel,
        "kern": (w.kern_ok if which == "ok" else w.kern_per) * kern,
        "reg": w.reg * tf.reduce_mean(l1),
    }
    out["total"] = out["pixel"] + out["kern"] + out["reg"]
    return out
