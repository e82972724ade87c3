"""What a spectrum is: wavelength grid, units and preprocessing transformers (paper section 2.2)."""

from dtl_dist.spectra.preprocess import (
    SNV,
    UNITS,
    Absorbance,
    Resample,
    SavitzkyGolay,
    TrimBands,
    paper_preprocessing,
)

__all__ = ["SNV", "UNITS", "Absorbance", "Resample", "SavitzkyGolay", "TrimBands", "paper_preprocessing"]
