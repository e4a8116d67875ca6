"""Latent cache: every image and its condition maps (and, by choice, all its captions) encoded once by the
frozen backbone.

The VAE and the text encoders never train, so their outputs are a pure function of (data, encoder
weights, resolution, max_sequence_length). `build_cache` stores them under
`cache_root / fingerprint[:24]`, where the fingerprint is a sha256 over
  - the data: every file's path, size and mtime, every caption's text, the problems found;
  - the encoders: the VAE's (and, with text cached, both text encoders') state-dict tensors (full bytes
    for small tensors, a strided sample plus an exact float64 sum for large ones), the VAE scaling/shift,
    with text the tokenizers' vocabularies and max_sequence_length; the transformer does not enter (it
    never touches the cache);
  - the resolution, the storage dtype, whether text is cached, and CACHE_VERSION;
so any change lands in a new folder. Image latents are the VAE posterior MEAN (deterministic), scaled
and shifted as FLUX expects, packed into tokens (facemogle.encode.encode_images).

Without text (`text=False`) the cache holds no T5 / CLIP outputs: items carry their caption and the
training step encodes it (FaceMoGLEModule.prepare). A caption's T5 sequence, padded to max_sequence_length,
is most of a text cache's size: `estimate_size` says how much, and `build_cache` refuses to start when
the disk lacks the room.

Folder contents:
    meta.json                  fingerprint inputs, keys in order, shard size, text or not, problems
    common.safetensors         empty_latent (l, d): the all -1 map, used for absent and dropped regions;
                               with text, empty_text_sequence (s, D), empty_text_pooled (P,): the prompt ""
    shard_{j:05d}.safetensors  items j*shard_size ... (n of them):
                                 image_latents (n, l, d)
                                 cond_present (n, 20) bool      which maps are not the empty map
                                 cond_latents (m, l, d)         the m present maps, item after item
                                 cond_offsets (n + 1,) int64    item i's maps: rows offsets[i]:offsets[i+1]
                                 labels (n, H, W) uint8
                               with text, for the c captions of the n items:
                                 text_sequence (c, s, D), text_pooled (c, P), caption_offsets (n + 1,) int64
Every file is written to a temporary name and os.replace'd, so a file that exists is complete (a failed
write removes its temporary file); an interrupted build resumes at the first missing shard.
"""

from data_modules.cache.build import build_cache
from data_modules.cache.key import (
    CACHE_VERSION,
    DTYPES,
    cache_folder,
    data_identity,
    encoder_identity,
    fingerprint,
    is_complete,
)
from data_modules.cache.read import CachedDataset, CacheMeta, read_meta
from data_modules.cache.size import (
    PRESENT_SAMPLE,
    LatentShapes,
    SizeEstimate,
    count_present_maps,
    estimate_size,
    folder_bytes,
    format_bytes,
    free_bytes,
)

__all__ = [
    "CACHE_VERSION",
    "CacheMeta",
    "CachedDataset",
    "DTYPES",
    "LatentShapes",
    "PRESENT_SAMPLE",
    "SizeEstimate",
    "build_cache",
    "cache_folder",
    "count_present_maps",
    "data_identity",
    "encoder_identity",
    "estimate_size",
    "fingerprint",
    "folder_bytes",
    "format_bytes",
    "free_bytes",
    "is_complete",
    "read_meta",
]
