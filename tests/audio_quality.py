"""Test audio and what is measured on it, shared by the tests, the call fakes and the benchmarks
(so the benchmark's figures are the tests' figures): tones, speech-like signals, SINAD, band
energy and levels."""

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


# Vowel formants (F1, F2, F3 in Hz) of a few cardinal vowels: enough variety that no two
# syllables share a spectrum.
_VOWELS = (
    (730, 1090, 2440),
    (270, 2290, 3010),
    (300, 870, 2240),
    (530, 1840, 2480),
    (570, 840, 2410),
)


def speech_like(seconds: float, rate: int, *, seed: int = 0, level: float = 0.25) -> np.ndarray:
    """Int16 samples shaped like speech where a voice pipeline cares: words of voiced syllables
    (a wandering pitch of 100-240 Hz, harmonics weighted by vowel formants, a spectral tilt),
    a fricative burst now and then, pauses between words, over a faint noise floor (never
    digital zero, so no two 20 ms frames are equal). Peaks near ``level`` of full scale."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    out = rng.normal(0.0, 0.0008, n)  # the line's noise floor, about -62 dBFS
    base_f0 = rng.uniform(100, 240)
    position = int(rng.uniform(0.02, 0.15) * rate)
    while position < n:
        for _ in range(rng.integers(1, 5)):  # the syllables of one word
            length = int(rng.uniform(0.12, 0.28) * rate)
            end = min(position + length, n)
            if end <= position:
                break
            _syllable(out, position, end, rate, base_f0, rng)
            position = end + int(rng.uniform(0.0, 0.03) * rate)
        position += int(rng.choice([rng.uniform(0.06, 0.2), rng.uniform(0.3, 0.7)]) * rate)
    peak = np.max(np.abs(out)) or 1.0
    scaled = out * (level / max(peak, level)) if peak > level else out
    return np.round(np.clip(scaled, -1, 1) * 32767).astype("<i2")


def _syllable(
    out: np.ndarray, start: int, end: int, rate: int, base_f0: float, rng: np.random.Generator
) -> None:
    n = end - start
    t = np.arange(n) / rate
    # Pitch: the speaker's base, a slow glide over the syllable and a little jitter.
    f0 = base_f0 * (1 + rng.uniform(-0.15, 0.15) + rng.uniform(-0.1, 0.1) * t / max(t[-1], 1e-3))
    f0 = f0 * (1 + rng.normal(0, 0.004, n))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    formants = _VOWELS[rng.integers(len(_VOWELS))]
    mean_f0 = float(np.mean(f0))
    voiced = np.zeros(n)
    for k in range(1, int(min(rate / 2 - 500, 7000) / mean_f0)):
        freq = k * mean_f0
        weight = sum(1 / (1 + ((freq - f) / (60 + 0.08 * f)) ** 2) for f in formants)
        weight *= (1 + freq / 500) ** -1.0  # the glottal source's roll-off
        voiced += weight * np.sin(k * phase)
    attack = min(n, int(0.03 * rate))
    envelope = np.ones(n)
    envelope[:attack] = np.sin(np.linspace(0, np.pi / 2, attack)) ** 2
    envelope[n - attack :] = envelope[:attack][::-1]
    segment = voiced * envelope / (np.max(np.abs(voiced)) or 1.0)
    if rng.random() < 0.3:  # a fricative onset: high-passed noise
        burst = min(n, int(rng.uniform(0.04, 0.09) * rate))
        hiss = np.diff(rng.normal(0, 0.25, burst + 1)) * np.hanning(burst)
        segment[:burst] = segment[:burst] * 0.3 + hiss
    out[start:end] += segment * rng.uniform(0.6, 1.0)
