"""The OOD autoencoder of Lindgren and Zach (2022), Section 3.1 and Figure 1.

Sizes for a 192 x 192 input: encoder 192 -> 190 -> 188 -> 93 -> 91 -> 89 -> 44, latent 42 x 42,
decoder 42 -> 84 -> 82 -> 80 -> 160 -> 158 -> 156. All convolutions are 3 x 3 and valid, except:

- the two stride-2 transposed convolutions use ``padding="same"`` (exact doubling), and
- the final single-filter convolution uses ``padding="same"`` and a linear activation,

which is the only reading of Figure 1 with 3 x 3 kernels that gives the paper's 42 x 42 latent,
156 x 156 aperture and about 41,000 trainable parameters (41,186 here). The aperture is centred:
output pixel (i, j) reconstructs input pixel (i + 18, j + 18).

The network is fully convolutional: built with ``input_shape=(None, None, 1)`` the same weights run
on a whole radiograph. For inputs whose sides are multiples of 4 the output is 36 px smaller on each
axis and stays aligned (offset 18). Because transposed convolutions sum overlapping contributions, a
patch's outermost output pixels see fewer latent pixels than the same positions in a larger image;
positions at least ``EDGE_MARGIN`` px inside a patch's aperture are identical to a whole-image pass.

Dead latent. The latent is ``min(relu(conv), 1)``; with a zero bias and some seeds the latent
convolution's pre-activation is negative everywhere at initialisation (seed 1: ``z == 0`` for
every input), so no gradient reaches the encoder and the output is constant for ever. The latent
convolution's bias therefore starts at ``LATENT_BIAS`` (0.1); core.training also detects a latent
that dies during training and re-initialises that layer (measured figures in core/training.py).

Input gain. A model trained on background-removed radiographs (core.normalise) sees okay texture
of about 0.007 grey levels RMS around 0.5, far below the spread of raw grey levels the layers'
initialisation suits. Its bounded latent then dies within a few steps and for good: measured on
the GDXray training films (twicing, sigma 24, SNI), 499 re-centrings in 1,036 steps and a constant
output (the residual is the normalised image itself). ``gain`` wraps the network in two fixed
``Rescaling`` layers, ``x -> 0.5 + gain (x - 0.5)`` before the encoder and the inverse after the
reconstruction, so the layers work on a texture ``gain`` times larger while inputs, residuals and
thresholds stay in grey levels. With gain 8 the same recipe keeps its latent (1-2 re-centrings in
about 1,270 steps) and after 20 minutes reproduces 61-72 % of the normalised films' variance in the
weld interior instead of none (docs/benchmark/notes.md, item 5).

Mixed precision. ``dtype_policy="mixed_bfloat16"`` computes the hidden layers in bfloat16 (about
twice as fast on CPUs with AVX512-BF16); the latent and the reconstruction layers stay float32 so
that L_reg and the residuals keep full precision. Saved models are always rebuilt in float32.
"""

from __future__ import annotations

PATCH = 192
APERTURE = 156
OFFSET = (PATCH - APERTURE) // 2  # 18: input pixel of aperture pixel 0
LATENT = 42
STRIDE = 4  # total down-sampling; whole-image inputs are padded to a multiple of this
EDGE_MARGIN = 4  # aperture pixels at a patch edge that differ from a whole-image pass (measured)
FILTERS = (18, 24)
DROPOUT = 0.12
L1_LATENT = 0.01
KERNEL = 3
LATENT_BIAS = 0.1  # initial bias of the latent convolution (prevents a dead latent at init)
BACKGROUND_GAIN = 8.0  # input gain of a model on background-removed radiographs ("Input gain")
GAIN_CENTRE = 0.5  # grey level the input gain scales around (core.normalise.OFFSET_GREY)


def build_autoencoder(
    *,
    input_shape: tuple[int | None, int | None, int] = (PATCH, PATCH, 1),
    filters: tuple[int, int] = FILTERS,
    dropout: float = DROPOUT,
    seed: int | None = None,
    name: str = "ood_autoencoder",
    latent_bias: float = LATENT_BIAS,
    dtype_policy: str | None = None,
    gain: float = 1.0,
):
    """Build the autoencoder with the Keras functional API.

    Parameters
    ----------
    input_shape : tuple
        ``(rows, cols, 1)``; ``(None, None, 1)`` for whole radiographs.
    filters : tuple of int
        Filters of encoder blocks 1 and 2 (the decoder mirrors them).
    dropout : float
        Dropout fraction in every block.
    seed : int, optional
        Seeds weight initialisation and dropout.
    latent_bias : float
        Initial bias of the latent convolution; 0 is the plain Keras default (see "Dead latent").
    dtype_policy : str, optional
        Keras dtype policy of the hidden layers, e.g. ``"mixed_bfloat16"`` for training on CPUs
        with bfloat16 support; the latent and reconstruction layers always compute in float32.
    gain : float
        Input gain around grey level 0.5 (see "Input gain"); 1 builds the paper's network as it is.

    Returns
    -------
    model : keras.Model
        Outputs ``[reconstruction, latent]``: shapes ``(B, 156, 156, 1)`` and ``(B, 42, 42, 1)``
        for 192 x 192 inputs. The latent is returned so the loss can apply L_reg (Section 3.1).
    """
    import keras
    from keras import layers

    if seed is not None:
        keras.utils.set_random_seed(seed)
    init = keras.initializers.HeUniform(seed=seed)
    f1, f2 = filters

    hidden = dtype_policy  # None: the global policy (float32 unless someone changed it)
    exact = "float32" if dtype_policy is not None else None

    def conv(n, x, *, strides=1, padding="valid", activation="relu", name=None, dtype=hidden,
             bias=0.0):
        return layers.Conv2D(
            n, KERNEL, strides=strides, padding=padding, activation=activation,
            kernel_initializer=init, bias_initializer=keras.initializers.Constant(bias),
            name=name, dtype=dtype,
        )(x)

    if not gain > 0:
        raise ValueError(f"gain must be positive, got {gain}")
    inp = keras.Input(shape=input_shape, name="image")
    x = inp
    if gain != 1.0:
        x = layers.Rescaling(gain, offset=GAIN_CENTRE * (1.0 - gain), name="input_gain", dtype=exact)(x)
    for b, n in enumerate((f1, f2), start=1):
        x = conv(n, x, name=f"enc{b}_conv1")
        x = layers.Dropout(dropout, seed=seed, name=f"enc{b}_dropout", dtype=hidden)(x)
        x = conv(n, x, name=f"enc{b}_conv2")
        x = conv(n, x, strides=2, name=f"enc{b}_down")
    z = conv(1, x, activation=None, name="latent_conv", dtype=exact, bias=latent_bias)
    z = layers.ReLU(max_value=1.0, name="latent", dtype=exact)(z)  # bounded to [0, 1]
    x = z
    for b, n in enumerate((f2, f1), start=1):
        x = layers.Dropout(dropout, seed=seed, name=f"dec{b}_dropout", dtype=hidden)(x)
        x = layers.Conv2DTranspose(
            n, KERNEL, strides=2, padding="same", activation="relu",
            kernel_initializer=init, name=f"dec{b}_up", dtype=hidden,
        )(x)
        x = conv(n, x, name=f"dec{b}_conv1")
        x = conv(n, x, name=f"dec{b}_conv2")
    out = conv(1, x, padding="same", activation=None, name="reconstruction", dtype=exact)
    if gain != 1.0:
        out = layers.Rescaling(1.0 / gain, offset=GAIN_CENTRE * (1.0 - 1.0 / gain), name="output_gain",
                               dtype=exact)(out)
    return keras.Model(inp, [out, z], name=name)


def model_filters(model) -> tuple[int, int]:
    """Filters of encoder blocks 1 and 2 of an autoencoder built by :func:`build_autoencoder`."""
    return (model.get_layer("enc1_conv1").filters, model.get_layer("enc2_conv1").filters)


def model_gain(model) -> float:
    """Input gain of an autoencoder built by :func:`build_autoencoder` (1.0 without gain layers)."""
    try:
        return float(model.get_layer("input_gain").scale)
    except ValueError:
        return 1.0


def float32_copy(model, *, input_shape=(PATCH, PATCH, 1)):
    """Return a float32 copy of ``model`` (e.g. one trained with mixed precision)."""
    dropout = float(model.get_layer("enc1_dropout").rate)
    copy = build_autoencoder(input_shape=input_shape, filters=model_filters(model), dropout=dropout,
                             gain=model_gain(model))
    copy.set_weights(model.get_weights())
    return copy


def whole_image_model(model):
    """Return a float32 copy of ``model`` that accepts any input size, sharing no state with it."""
    return float32_copy(model, input_shape=(None, None, 1))
