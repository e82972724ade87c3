"""The wavelength grid of a spectrum (paper section 2.2: 400-2500 nm every 10 nm).

A grid is a strictly increasing 1-D float array of wavelengths in nm. This module validates grids,
builds the paper's default grid, reads wavelengths out of spectral column names and resamples
spectra from one grid to another by linear interpolation.
"""

from __future__ import annotations

import re

import numpy as np

from dtl_dist.errors import UserInputError

PAPER_GRID = (400.0, 2500.0, 10.0)
"""Start, stop (inclusive) and step in nm of the grid used in Shen et al. (2022), section 2.2."""

_COLUMN_WAVELENGTH = re.compile(r"^(?:.*?[._])??(\d+(?:\.\d+)?)(?:[._][A-Za-z]+)?$")


def make_grid(start: float = PAPER_GRID[0], stop: float = PAPER_GRID[1], step: float = PAPER_GRID[2]) -> np.ndarray:
    """Wavelengths from ``start`` to ``stop`` inclusive every ``step`` nm (default: the paper's 211 bands)."""
    if not (step > 0 and stop > start):
        raise UserInputError(f"wavelength grid {start}:{stop}:{step}: expected start < stop and step > 0")
    n = int(round((stop - start) / step)) + 1
    return start + step * np.arange(n, dtype=np.float64)


def parse_grid(text: str) -> np.ndarray:
    """Parse ``"START:STOP:STEP"`` (nm), e.g. ``"400:2500:10"``."""
    try:
        start, stop, step = (float(part) for part in text.split(":"))
    except ValueError:
        raise UserInputError(f"grid {text!r}: expected START:STOP:STEP in nm, e.g. 400:2500:10") from None
    return make_grid(start, stop, step)


def validate_grid(wavelengths, *, where: str = "wavelengths") -> np.ndarray:
    """Return ``wavelengths`` as float64 after checking it is finite, 1-D and strictly increasing."""
    wl = np.asarray(wavelengths, dtype=np.float64)
    if wl.ndim != 1 or wl.size < 2:
        raise UserInputError(f"{where}: expected a 1-D list of at least 2 wavelengths, got shape {wl.shape}")
    if not np.all(np.isfinite(wl)):
        raise UserInputError(f"{where}: wavelengths must be finite numbers in nm")
    steps = np.diff(wl)
    if np.any(steps == 0):
        dup = wl[1:][steps == 0][0]
        raise UserInputError(f"{where}: duplicated wavelength {dup:g} nm; expected each band once")
    if np.any(steps < 0):
        i = int(np.argmax(steps < 0)) + 1
        raise UserInputError(
            f"{where}: wavelengths are not increasing at position {i} ({wl[i - 1]:g} nm then {wl[i]:g} nm)"
        )
    return wl


def wavelength_of_column(name: str) -> float | None:
    """Wavelength in nm named by a spectral column, or None if the column is not spectral.

    Accepts plain numbers (``350``, ``350.0``) and prefixed/suffixed names such as the OSSL's
    ``scan_visnir.350_ref`` or ``wl_350``.
    """
    match = _COLUMN_WAVELENGTH.match(str(name).strip())
    if not match:
        return None
    return float(match.group(1))


def same_grid(a, b, *, atol: float = 1e-6) -> bool:
    """True when two grids have the same bands (to ``atol`` nm)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=0.0, atol=atol))


def resample(spectra, source, target) -> np.ndarray:
    """Linearly interpolate spectra (rows) from wavelengths ``source`` onto ``target``.

    The target must lie inside the source range: extrapolating a spectrum invents data, so it is refused.
    """
    source = validate_grid(source, where="source wavelengths")
    target = validate_grid(target, where="target wavelengths")
    if target[0] < source[0] - 1e-9 or target[-1] > source[-1] + 1e-9:
        raise UserInputError(
            f"cannot resample {source[0]:g}-{source[-1]:g} nm spectra onto {target[0]:g}-{target[-1]:g} nm: "
            "the target grid must lie inside the measured range (trim it, e.g. --grid with a narrower range)"
        )
    x = np.asarray(spectra)
    idx = np.clip(np.searchsorted(source, target, side="right") - 1, 0, source.size - 2)
    w = ((target - source[idx]) / (source[idx + 1] - source[idx])).astype(x.dtype if x.dtype.kind == "f" else np.float64)
    return x[..., idx] * (1 - w) + x[..., idx + 1] * w
