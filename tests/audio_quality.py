"""Audio measurements shared by the resampler tests and ``bench/resample.py``: test tones and
what is measured on them (so the benchmark's figures are the tests' figures)."""

from __future__ import annotations

import numpy as np


def tone(seconds: float, rate: int, hz: float = 1000.0, amplitude: float = 0.5) -> np.ndarray:
    """A sine as int16 samples (amplitude 0.5 = -6 dBFS)."""
    t = np.arange(int(seconds * rate)) / rate
    return np.round(np.sin(2 * np.pi * hz * t) * amplitude * 32767).astype("<i2")


def _fit(signal: np.ndarray, rate: int, hz: float) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(len(signal)) / rate
    basis = np.stack([np.sin(2 * np.pi * hz * t), np.cos(2 * np.pi * hz * t), np.ones_like(t)], 1)
    coef, *_ = np.linalg.lstsq(basis, signal.astype(np.float64), rcond=None)
    return basis @ coef, coef


def sinad_db(signal: np.ndarray, rate: int, hz: float) -> float:
    """Signal to everything else (noise, distortion, clicks): a least-squares fit of the tone
    is the signal, the residual the rest."""
    fit, _ = _fit(signal, rate, hz)
    residual = signal - fit
    return float(10 * np.log10(np.sum(fit**2) / max(np.sum(residual**2), 1e-30)))


def tone_level_db(signal: np.ndarray, rate: int, hz: float, amplitude: float = 0.5) -> float:
    """The level of the ``hz`` component relative to a tone of ``amplitude``."""
    _, coef = _fit(signal, rate, hz)
    return float(20 * np.log10(max(np.hypot(coef[0], coef[1]), 1e-9) / (amplitude * 32767)))


def band_energy_db(signal: np.ndarray, rate: int, above_hz: float) -> float:
    """Energy above ``above_hz`` relative to the total (Blackman window: its leakage from a
    1 kHz tone is far below what is measured)."""
    spectrum = np.abs(np.fft.rfft(signal * np.blackman(len(signal)))) ** 2
    freqs = np.fft.rfftfreq(len(signal), 1 / rate)
    return float(10 * np.log10(max(spectrum[freqs > above_hz].sum(), 1e-30) / spectrum.sum()))


def rms_db(signal: np.ndarray, amplitude: float = 0.5) -> float:
    """RMS level relative to a sine of ``amplitude``."""
    rms = float(np.sqrt(np.mean(np.square(signal.astype(np.float64))))) if len(signal) else 0.0
    return float(20 * np.log10(max(rms, 1e-9) / (amplitude * 32767 / np.sqrt(2))))


def steady(signal: np.ndarray, rate: int) -> np.ndarray:
    """Leave out the first and last 0.25 s (filters filling, the end of the signal)."""
    return signal[rate // 4 : len(signal) - rate // 4]
