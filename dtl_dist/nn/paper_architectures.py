"""The optimised 1D-CNN architectures reported by Shen et al. (2022), Tables 2 and 4.

``GLOBAL``, ``CHINA``, ``SWEDEN`` and ``USA`` are the 1D-CNNs optimised on the global and country
spectral libraries (Table 2; the base models for transferring representations). ``DTL_IG_CHINA``,
``DTL_IG_SWEDEN`` and ``DTL_IG_USA`` are the DTL-I_g 1D-CNNs optimised on the k+n localised data of each
site (Table 4). All use 211 bands (400-2500 nm every 10 nm) and no pooling.

Reading of the tables (their extracted text has shifted cells):

- A layer listed under a block without its own block label belongs to the block above, except a second
  fully-connected layer, which opens the next FC-block (Table 2 China "FC-block 3" with 165 nodes,
  Table 4 USA "FC-block 2" with 1015 nodes); this matches the stated totals of 4 (Sweden) to 8 (China)
  blocks including the output block.
- Table 2 Sweden lost the activation of its Conv-block; ``relu`` is an assumption.
- Batch normalisation and dropout rows go to the block whose layer they follow (Table 2 Sweden and USA
  list the last dropout next to the "Output-block" label; it is the last FC-block's dropout).

References
----------
Shen Z. et al. (2022) Deep transfer learning of global spectra for local soil carbon monitoring,
Tables 2 and 4.
"""

from __future__ import annotations

from dtl_dist.nn.builder import CNNConfig, ConvBlock, FCBlock

N_BANDS = 211
"""Bands of the paper's spectra: 400-2500 nm every 10 nm (section 2.2)."""

GLOBAL = CNNConfig(
    [ConvBlock(148, 10, stride=4, padding="valid", activation="swish")],
    [
        FCBlock(691, "selu"),
        FCBlock(891, "elu", batch_norm=True, dropout=0.38),
        FCBlock(533, "swish", batch_norm=True),
        FCBlock(764, "selu", batch_norm=True, dropout=0.38),
        FCBlock(650, "selu", dropout=0.38),
    ],
)

CHINA = CNNConfig(
    [
        ConvBlock(25, 7, stride=7, padding="valid", activation="swish"),
        ConvBlock(248, 8, stride=3, padding="valid", activation="leaky_relu"),
        ConvBlock(238, 5, stride=4, padding="valid", activation="relu", dropout=0.39),
    ],
    [
        FCBlock(212, "leaky_relu", dropout=0.07),
        FCBlock(140, "leaky_relu"),
        FCBlock(165, "swish"),
        FCBlock(50, "leaky_relu", dropout=0.07),
    ],
)

SWEDEN = CNNConfig(
    [ConvBlock(161, 5, stride=3, padding="valid", activation="relu")],
    [
        FCBlock(896, "swish", batch_norm=True, dropout=0.37),
        FCBlock(474, "swish", batch_norm=True, dropout=0.37),
    ],
)

USA = CNNConfig(
    [
        ConvBlock(216, 8, stride=7, padding="valid", activation="selu"),
        ConvBlock(216, 8, stride=8, padding="same", activation="swish", batch_norm=True),
        ConvBlock(252, 4, stride=4, padding="same", activation="leaky_relu", dropout=0.03),
    ],
    [
        FCBlock(179, "swish", batch_norm=True),
        FCBlock(252, "swish", batch_norm=True, dropout=0.29),
    ],
)

DTL_IG_CHINA = CNNConfig(
    [ConvBlock(232, 3, stride=2, padding="valid", activation="swish", dropout=0.001)],
    [FCBlock(22, "elu", dropout=0.38)],
)

DTL_IG_SWEDEN = CNNConfig(
    [ConvBlock(214, 10, stride=6, padding="same", activation="selu", dropout=0.20)],
    [FCBlock(446, "leaky_relu", batch_norm=True), FCBlock(208, "swish", dropout=0.48)],
)

DTL_IG_USA = CNNConfig(
    [ConvBlock(212, 7, stride=3, padding="same", activation="swish", dropout=0.16)],
    [FCBlock(1005, "swish"), FCBlock(1015, "selu")],
)

TABLE_2 = {"global": GLOBAL, "china": CHINA, "sweden": SWEDEN, "usa": USA}
"""Global and country 1D-CNNs (Table 2), by library."""

TABLE_4 = {"china": DTL_IG_CHINA, "sweden": DTL_IG_SWEDEN, "usa": DTL_IG_USA}
"""DTL-I_g 1D-CNNs (Table 4), by local site."""
