"""Data sources (synthetic generator, files on disk) and the pipelines that feed training."""

from __future__ import annotations

from cellseg.core.config import Config
from cellseg.data.sample import DataError, Sample, SampleRef


def collect_samples(cfg: Config) -> tuple[list[Sample] | list[SampleRef], str]:
    """The run's annotated samples (generated, or references to files not yet read) and a description."""
    if cfg.data.path is None:
        from cellseg.data.synthetic import make_samples

        syn = cfg.data.synthetic
        samples = make_samples(syn, cfg.data_seed)
        source = (
            f"synthetic: {syn.num_images} generated images of {syn.image_size}x{syn.image_size} px "
            f"({', '.join(syn.styles)}), seed {cfg.data_seed}"
        )
        return samples, source
    from cellseg.data.readers import scan_samples

    refs = scan_samples(cfg.data.path, cfg.data.layout, cfg.data.rle_csv)
    if cfg.data.cache:
        from cellseg.data.cache import SampleCache

        refs = SampleCache(cfg.data.cache_dir).wrap(refs)
    paths = cfg.data.path if isinstance(cfg.data.path, list) else [cfg.data.path]
    return refs, f"files: {len(refs)} annotated images from {', '.join(map(str, paths))}"


__all__ = ["DataError", "Sample", "SampleRef", "collect_samples"]
