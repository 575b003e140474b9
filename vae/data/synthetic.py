"""Deterministic synthetic stereo "music": a stand-in for MUSDB in smoke sweeps and fast tests.

Every chunk is a window into an imaginary song (tempo, key, scale) with four layers named like
the MUSDB stems: drums (kick, snare, hats), bass, other (chords) and vocals (a vibrato lead with
vowel-like formants). Each event is panned with constant power, so left and right differ.

A chunk is a pure function of (seed, split, key): numpy's PCG64 seeded with that triple drives
everything, so the same triple gives bit-identical audio on any machine and the two splits draw
from independent streams. Oscillators read a per-note wavetable (one period of the summed
harmonics) instead of calling sin per harmonic; that keeps a 1 s stereo chunk at a few ms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vae.data.settings import STEM_NAMES

SPLIT_IDS = {"train": 0, "valid": 1}
MIXTURE, LAYERS = STEM_NAMES[0], STEM_NAMES[1:]  # the mixture is the sum of the other stems
SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "major_pentatonic": (0, 2, 4, 7, 9),
    "minor_pentatonic": (0, 3, 5, 7, 10),
}
PRE_ROLL_SECONDS = 1.0  # events may start before the chunk, so chunks open mid-note like real crops
PEAK_RANGE = (0.25, 0.7)  # peak level of every chunk: well below clipping, varied loudness
TABLE_SIZE = 2048


@dataclass(frozen=True)
class _Song:
    sample_rate: int
    num_samples: int
    beat: float  # seconds per beat
    grid_offset: float  # where the bar grid starts, in seconds (<= -PRE_ROLL_SECONDS)
    root: int  # MIDI pitch class of the key
    scale: tuple[int, ...]

    @property
    def start(self) -> float:
        return -PRE_ROLL_SECONDS

    @property
    def end(self) -> float:
        return self.num_samples / self.sample_rate

    def pitch(self, degree: int, base_midi: int) -> int:
        """MIDI note of a scale degree (any integer, wraps across octaves) above ``base_midi``."""
        octave, step = divmod(degree, len(self.scale))
        base = base_midi - (base_midi - self.root) % 12  # the key's root at or below base_midi
        return base + 12 * octave + self.scale[step]


def render_chunk(
    seed: int,
    split: str,
    key: int,
    *,
    num_samples: int,
    sample_rate: int = 44100,
    channels: int = 2,
    sources: Sequence[str] = ("mixture",),
) -> tuple[np.ndarray, str]:
    """One chunk ``[channels, num_samples]`` float32 and the source it was drawn as.

    The source is one of ``sources`` picked at random per chunk ("mixture" sums all layers).
    """
    if split not in SPLIT_IDS:
        raise ValueError(f"split must be one of {sorted(SPLIT_IDS)}, got {split!r}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    # One child stream per purpose: the drums of chunk k are the same whether drawn alone or mixed.
    streams = np.random.SeedSequence([seed, SPLIT_IDS[split], key]).spawn(1 + len(LAYERS))
    rng = np.random.default_rng(streams[0])
    source = str(sources[rng.integers(len(sources))])
    song = _draw_song(rng, sample_rate, num_samples)
    peak = rng.uniform(*PEAK_RANGE)

    out = np.zeros((channels, num_samples), dtype=np.float32)
    layers = LAYERS if source == MIXTURE else (source,)
    for name, stream in zip(LAYERS, streams[1:]):
        if name in layers:
            _LAYER_RENDERERS[name](out, song, np.random.default_rng(stream))
    level = float(np.max(np.abs(out)))
    if level > 1e-8:  # a stem can be silent (a vocal rest); leave silence as silence
        out *= peak / level
    return out, source


# ---- song-level choices ---------------------------------------------------------------------


def _draw_song(rng: np.random.Generator, sample_rate: int, num_samples: int) -> _Song:
    beat = 60.0 / rng.uniform(80.0, 160.0)
    bar = 4 * beat
    scale_name = list(SCALES)[rng.integers(len(SCALES))]
    return _Song(
        sample_rate=sample_rate,
        num_samples=num_samples,
        beat=beat,
        # the bar grid starts at a random phase before the pre-roll, so downbeats land anywhere
        grid_offset=-PRE_ROLL_SECONDS - rng.uniform(0.0, bar),
        root=int(rng.integers(12)),
        scale=SCALES[scale_name],
    )


def _grid(song: _Song, step: float) -> np.ndarray:
    """Onset times (s) of a regular grid covering the pre-roll and the chunk."""
    count = int(np.ceil((song.end - song.grid_offset) / step))
    return song.grid_offset + step * np.arange(count)


def _midi_to_hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


def _pan_gains(pan: float, channels: int) -> np.ndarray:
    """Constant-power pan law: pan in [-1, 1] -> per-channel gains with L^2 + R^2 = 1."""
    if channels == 1:
        return np.ones(1, dtype=np.float32)
    angle = (pan + 1.0) * np.pi / 4.0
    return np.array([np.cos(angle), np.sin(angle)], dtype=np.float32)


# ---- event rendering ---------------------------------------------------------------------------


def _visible(song: _Song, onset: float, duration: float) -> tuple[int, np.ndarray] | None:
    """First sample index and local times (s since onset) of the part of an event inside the chunk."""
    sr = song.sample_rate
    first = max(0, int(np.ceil(onset * sr)))
    stop = min(song.num_samples, int(np.ceil((onset + duration) * sr)))
    if stop <= first:
        return None
    return first, np.arange(first, stop, dtype=np.float64) / sr - onset


def _add(out: np.ndarray, first: int, signal: np.ndarray, pan: float) -> None:
    gains = _pan_gains(pan, out.shape[0])
    out[:, first : first + signal.shape[0]] += gains[:, None] * signal.astype(np.float32)[None, :]


def _envelope(
    t: np.ndarray, attack: float, decay: float, duration: float, release: float = 0.02
) -> np.ndarray:
    """Linear attack, exponential decay, linear release over the last ``release`` seconds."""
    envelope = np.exp(t * np.float32(-1.0 / decay))
    # attack and release touch only the ends of the note, so only those samples are scaled
    rising = int(np.searchsorted(t, attack))
    envelope[:rising] *= t[:rising] / np.float32(attack)
    falling = int(np.searchsorted(t, duration - release))
    envelope[falling:] *= np.clip((duration - t[falling:]) / np.float32(release), 0.0, 1.0)
    return envelope


def _wavetable(amplitudes: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """One period of sum_h a_h sin(2 pi h x + phi_h), plus a wrap-around sample for interpolation.

    Built with one inverse FFT: much cheaper than a sine per harmonic per table entry.
    """
    spectrum = np.zeros(TABLE_SIZE // 2 + 1, dtype=np.complex128)
    # sin(w + phi) = Re(exp(i (w + phi - pi/2))); irfft divides by N and keeps the real part twice
    spectrum[1 : len(amplitudes) + 1] = amplitudes * np.exp(1j * (phases - np.pi / 2)) * (TABLE_SIZE / 2)
    table = np.fft.irfft(spectrum, n=TABLE_SIZE).astype(np.float32)
    return np.append(table, table[0])


def _oscillate(table: np.ndarray, cycles: np.ndarray) -> np.ndarray:
    """Read the wavetable at a phase given in cycles (linear interpolation, cycles >= 0)."""
    position = cycles * TABLE_SIZE
    whole = position.astype(np.int64)
    frac = (position - whole).astype(np.float32)
    index = whole & (TABLE_SIZE - 1)  # TABLE_SIZE is a power of two: a cheap modulo
    low = table[index]
    return low + frac * (table[index + 1] - low)


def _harmonic_note(
    out: np.ndarray, song: _Song, rng: np.random.Generator, *, midi: float, onset: float,
    duration: float, amplitudes: np.ndarray, attack: float, decay: float, gain: float, pan: float,
    vibrato: tuple[float, float] = (0.0, 0.0),
) -> None:
    visible = _visible(song, onset, duration)
    if visible is None:
        return
    first, t = visible
    freq = _midi_to_hz(midi)
    # keep every harmonic below Nyquist so nothing aliases at low sample rates
    amplitudes = amplitudes[: max(1, int(0.45 * song.sample_rate / freq))]
    table = _wavetable(amplitudes, rng.uniform(0, 2 * np.pi, len(amplitudes)))
    cycles = freq * t + rng.uniform() + 1.0  # + 1 keeps the vibrato-shifted phase non-negative
    rate, depth = vibrato
    if depth > 0:
        # integral of f * (1 + depth * sin(2 pi rate t)): exact phase, no cumulative sum needed
        cycles -= freq * depth / (2 * np.pi * rate) * np.cos(2 * np.pi * rate * t)
    signal = _oscillate(table, cycles) * _envelope(t.astype(np.float32), attack, decay, duration) * gain
    _add(out, first, signal, pan)


def _render_drums(out: np.ndarray, song: _Song, rng: np.random.Generator) -> None:
    sixteenth = song.beat / 4
    for step, onset in enumerate(_grid(song, sixteenth)):
        position = step % 16
        kick_p = 0.95 if position in (0, 8) else (0.35 if position % 4 == 0 else 0.08)
        snare_p = 0.9 if position in (4, 12) else 0.05
        hat_p = 0.85 if position % 2 == 0 else 0.35
        swing = rng.normal(0.0, 0.003)  # a few ms of human timing
        if rng.uniform() < kick_p:
            visible = _visible(song, onset + swing, 0.35)
            if visible is not None:
                first, t = visible
                # pitch drops from ~150 Hz to ~45 Hz; phase is the closed-form integral of the sweep
                cycles = 45.0 * t + 100.0 * 0.03 * (1.0 - np.exp(-t / 0.03))
                kick = np.sin(2 * np.pi * cycles) * _envelope(t, 0.001, 0.12, 0.35)
                _add(out, first, kick * rng.uniform(0.6, 1.0), rng.uniform(-0.1, 0.1))
        if rng.uniform() < snare_p:
            visible = _visible(song, onset + swing, 0.25)
            if visible is not None:
                first, t = visible
                noise = _smooth(rng.standard_normal(t.shape[0]), 3)
                body = 0.6 * np.sin(2 * np.pi * rng.uniform(170, 230) * t)
                snare = (noise + body) * _envelope(t, 0.001, 0.06, 0.25)
                _add(out, first, 0.5 * snare * rng.uniform(0.5, 1.0), rng.uniform(-0.25, 0.25))
        if rng.uniform() < hat_p:
            length = 0.05 if rng.uniform() < 0.9 else 0.25  # mostly closed, sometimes open
            visible = _visible(song, onset + swing, length)
            if visible is not None:
                first, t = visible
                # first difference of white noise: a bright, hi-hat-like high-pass
                hat = np.diff(rng.standard_normal(t.shape[0] + 1)) * _envelope(t, 0.0005, length / 3, length)
                _add(out, first, 0.12 * hat * rng.uniform(0.4, 1.0), rng.uniform(-0.7, 0.7))


def _smooth(signal: np.ndarray, width: int) -> np.ndarray:
    """Moving average (a cheap low-pass) via a cumulative sum."""
    padded = np.concatenate([np.zeros(width), np.cumsum(signal)])
    return (padded[width:] - padded[:-width]) / width


def _render_bass(out: np.ndarray, song: _Song, rng: np.random.Generator) -> None:
    amplitudes = 1.0 / np.arange(1, 9) ** rng.uniform(1.0, 2.0)
    onset = song.grid_offset
    eighth = song.beat / 2
    while onset < song.end:
        length = eighth * rng.choice([1, 2, 2, 4])
        if rng.uniform() < 0.85:  # some rests
            _harmonic_note(
                out, song, rng, midi=song.pitch(int(rng.choice([0, 0, 2, 3, 4, 5])), 36), onset=onset,
                duration=length * 0.95, amplitudes=amplitudes, attack=0.005, decay=rng.uniform(0.3, 1.0),
                gain=0.5, pan=rng.uniform(-0.15, 0.15),
            )
        onset += length


def _render_chords(out: np.ndarray, song: _Song, rng: np.random.Generator) -> None:
    amplitudes = 1.0 / np.arange(1, 11) ** rng.uniform(0.8, 2.0)
    attack = rng.uniform(0.01, 0.08)
    onset = song.grid_offset
    while onset < song.end:
        length = song.beat * rng.choice([2, 4])
        degree = int(rng.integers(len(song.scale)))
        for offset in (0, 2, 4):  # a triad stacked in thirds within the scale
            _harmonic_note(
                out, song, rng, midi=song.pitch(degree + offset, 52), onset=onset, duration=length,
                amplitudes=amplitudes, attack=attack, decay=rng.uniform(0.6, 2.5), gain=0.22,
                pan=rng.uniform(-0.8, 0.8),
            )
        onset += length


def _render_vocals(out: np.ndarray, song: _Song, rng: np.random.Generator) -> None:
    formants = (rng.uniform(300, 800), rng.uniform(900, 2200))  # a vowel, held for the chunk
    onset = song.grid_offset
    eighth = song.beat / 2
    degree = int(rng.integers(len(song.scale)))
    while onset < song.end:
        length = eighth * rng.choice([1, 2, 3, 4])
        degree += int(rng.choice([-2, -1, -1, 0, 1, 1, 2]))  # melodies move mostly by step
        degree = int(np.clip(degree, -3, 9))
        if rng.uniform() < 0.85:
            midi = song.pitch(degree, 62)
            harmonic_hz = _midi_to_hz(midi) * np.arange(1, 16)
            # vowel-like spectrum: 1/h roll-off lifted around two formant frequencies
            amplitudes = (1.0 / np.arange(1, 16)) * (
                1.0 + 3.0 * np.exp(-(((harmonic_hz - formants[0]) / 150.0) ** 2))
                + 2.0 * np.exp(-(((harmonic_hz - formants[1]) / 250.0) ** 2))
            )
            _harmonic_note(
                out, song, rng, midi=midi, onset=onset, duration=length * 0.97, amplitudes=amplitudes,
                attack=rng.uniform(0.02, 0.06), decay=rng.uniform(1.0, 4.0), gain=0.3,
                pan=rng.uniform(-0.1, 0.1), vibrato=(rng.uniform(4.5, 6.5), rng.uniform(0.005, 0.015)),
            )
        onset += length


_LAYER_RENDERERS = {
    "drums": _render_drums,
    "bass": _render_bass,
    "other": _render_chords,
    "vocals": _render_vocals,
}
if set(_LAYER_RENDERERS) != set(LAYERS):  # a stem without a renderer would be silently silent
    raise RuntimeError(f"synthetic layers {sorted(_LAYER_RENDERERS)} != stems {sorted(LAYERS)}")
