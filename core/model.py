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


def build_autoencoder(
    *,
    input_shape: tuple[int | None, int | None, int] = (PATCH, PATCH, 1),
    filters: tuple[int, int] = FILTERS,
    dropout: float = DROPOUT,
    seed: int | None = None,
    name: str = "ood_autoencoder",
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

    def conv(n, x, *, strides=1, padding="valid", activation="relu", name=None):
        return layers.Conv2D(
            n, KERNEL, strides=strides, padding=padding, activation=activation,
            kernel_initializer=init, name=name,
        )(x)

    inp = keras.Input(shape=input_shape, name="image")
    x = inp
    for b, n in enumerate((f1, f2), start=1):
        x = conv(n, x, name=f"enc{b}_conv1")
        x = layers.Dropout(dropout, seed=seed, name=f"enc{b}_dropout")(x)
        x = conv(n, x, name=f"enc{b}_conv2")
        x = conv(n, x, strides=2, name=f"enc{b}_down")
    z = conv(1, x, activation=None, name="latent_conv")
    z = layers.ReLU(max_value=1.0, name="latent")(z)  # bounded to [0, 1]
    x = z
    for b, n in enumerate((f2, f1), start=1):
        x = layers.Dropout(dropout, seed=seed, name=f"dec{b}_dropout")(x)
        x = layers.Conv2DTranspose(
            n, KERNEL, strides=2, padding="same", activation="relu",
            kernel_initializer=init, name=f"dec{b}_up",
        )(x)
        x = conv(n, x, name=f"dec{b}_conv1")
        x = conv(n, x, name=f"dec{b}_conv2")
    out = conv(1, x, padding="same", activation=None, name="reconstruction")
    return keras.Model(inp, [out, z], name=name)


def whole_image_model(model):
    """Return a copy of ``model`` that accepts any input size, sharing no state with it."""
    import keras

    filters = (model.get_layer("enc1_conv1").filters, model.get_layer("enc2_conv1").filters)
    full = build_autoencoder(input_shape=(None, None, 1), filters=filters)
    full.set_weights(model.get_weights())
    return full
