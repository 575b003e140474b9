"""Inference on audio files, one job per module:

* ``bundle``: weights-only model folders (save, load, from a training checkpoint);
* ``loading``: ``load_model`` for a bundle folder or an MLflow model URI;
* ``audio_io``: reading (streamed, resampled, channel-adapted) and writing audio files;
* ``streaming``: chunked encode/decode with receptive-field context (no seams, bounded memory);
* ``stream_encode``: ``vae-encode --stream``, a causal model's streaming encoder over a file or
  stdin (``vae.model.streaming`` streams; ``decode_stream`` decodes causal models that way);
* ``latents``: the latent file format, ``encode_file`` and ``decode_to_file``;
* ``scoring``: the training validation's metrics on reconstructions of whole files;
* ``mlflow_model``: a bundle as an MLflow pyfunc model (imported on its own: MLflow is slow).

The names below are the public API: ``from vae.inference import load_model``."""

from vae.inference.audio_io import (AUDIO_EXTENSIONS, MAX_SAMPLE_RATE, STDIO, AudioError,
                                    AudioInfo, AudioSource, adapt_channels, audio_info,
                                    find_audio_files, is_stdio, read_audio, resample,
                                    stream_audio, write_audio)
from vae.inference.bundle import (FACTS_FILE, REQUIRED_FILES, WEIGHTS_FILE, Bundle, BundleError,
                                  bundle_from_checkpoint, describe_timing, load_bundle, timing_line,
                                  load_checkpoint_model, model_facts, model_summary,
                                  require_causal, save_bundle, weights_fingerprint)
from vae.inference.latents import (LATENT_FORMAT, LatentFileError, Latents, decode_to_file,
                                   encode_file, find_latent_files)
from vae.inference.loading import is_model_uri, load_model, model_spec
from vae.inference.scoring import (MIN_SCORE_SAMPLES, SegmentScorer, evaluate_file, evaluate_files,
                                   kl_nats_summed_over_frames, mean_metrics,
                                   metric_segment_samples, rate_metrics, score)
from vae.inference.stream_encode import encode_file_streaming
from vae.inference.streaming import (DEFAULT_CHUNK_SECONDS, SampleCounter, chunk_frames_for,
                                     decode_latent, decode_stream, decoder_context_frames,
                                     encode_audio, encode_stream, encoder_context_frames, rechunk,
                                     reconstruct, take)

__all__ = [
    "AUDIO_EXTENSIONS", "MAX_SAMPLE_RATE", "STDIO", "AudioError", "AudioInfo", "AudioSource",
    "adapt_channels", "audio_info", "find_audio_files", "is_stdio", "read_audio", "resample",
    "stream_audio", "write_audio",
    "FACTS_FILE", "REQUIRED_FILES", "WEIGHTS_FILE", "Bundle", "BundleError",
    "bundle_from_checkpoint", "describe_timing", "timing_line", "is_model_uri", "load_bundle",
    "load_checkpoint_model", "load_model", "model_facts", "model_spec", "model_summary",
    "require_causal", "save_bundle", "weights_fingerprint",
    "LATENT_FORMAT", "LatentFileError", "Latents", "decode_to_file", "encode_file",
    "encode_file_streaming",
    "find_latent_files",
    "MIN_SCORE_SAMPLES", "SegmentScorer", "evaluate_file", "evaluate_files", "kl_nats_summed_over_frames",
    "mean_metrics", "metric_segment_samples", "rate_metrics", "score",
    "DEFAULT_CHUNK_SECONDS", "SampleCounter", "chunk_frames_for", "decode_latent", "decode_stream",
    "decoder_context_frames", "encode_audio", "encode_stream", "encoder_context_frames", "rechunk",
    "reconstruct", "take",
]
