"""Pipeline spec: YAML, checked against schemas/pipeline-spec.v1.json, then semantically."""

from shared.spec.loader import SpecError, load_spec, parse_spec
from shared.spec.model import IngestPolicy, LabelSettings, ModelSpec, PipelineSpec

__all__ = [
    "IngestPolicy",
    "LabelSettings",
    "ModelSpec",
    "PipelineSpec",
    "SpecError",
    "load_spec",
    "parse_spec",
]
