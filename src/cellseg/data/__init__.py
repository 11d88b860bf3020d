"""Data sources (synthetic generator, files on disk) and the pipelines that feed training."""

from __future__ import annotations

from cellseg.config import Config
from cellseg.data.sample import DataError, Sample


def load_samples(cfg: Config) -> tuple[list[Sample], str]:
    """All annotated samples for a run, and a one-line description of where they came from."""
    if cfg.data.path is None:
        from cellseg.data.synthetic import make_samples

        syn = cfg.data.synthetic
        samples = make_samples(syn, cfg.seed)
        source = (
            f"synthetic: {syn.num_images} generated images of {syn.image_size}x{syn.image_size} px "
            f"({', '.join(syn.styles)}), seed {cfg.seed}"
        )
        return samples, source
    from cellseg.data.readers import read_samples

    samples = read_samples(cfg.data.path, cfg.data.layout, cfg.data.rle_csv)
    paths = cfg.data.path if isinstance(cfg.data.path, list) else [cfg.data.path]
    return samples, f"files: {len(samples)} annotated images from {', '.join(map(str, paths))}"


__all__ = ["DataError", "Sample", "load_samples"]
