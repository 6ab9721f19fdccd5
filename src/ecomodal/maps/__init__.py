"""Maps over lat/lon grids as GeoTIFF: suitability (cosine or SDM), uncertainty, diversity and
embedding maps."""

from ecomodal.errors import GridError, MapError
from ecomodal.maps.cache import GridEmbeddings, embed_grid, grid_embeddings
from ecomodal.maps.embedding import components_rgb, embedding_map
from ecomodal.maps.grid import Grid, make_grid
from ecomodal.maps.output import GridMap, write_map
from ecomodal.maps.points import points_lat_lon, read_points
from ecomodal.maps.preview import preview_png
from ecomodal.maps.sdm import EmbeddingSDM
from ecomodal.maps.sdm_map import sdm_map
from ecomodal.maps.species import Query, query_embedding, species_map
from ecomodal.maps.uncertainty import (
    DiversityResult,
    SigmaMap,
    diversity_map,
    diversity_regression,
    species_density,
    uncertainty_map,
)

__all__ = [
    "DiversityResult",
    "EmbeddingSDM",
    "Grid",
    "GridEmbeddings",
    "GridError",
    "GridMap",
    "MapError",
    "Query",
    "SigmaMap",
    "components_rgb",
    "diversity_map",
    "diversity_regression",
    "embed_grid",
    "embedding_map",
    "grid_embeddings",
    "make_grid",
    "points_lat_lon",
    "preview_png",
    "query_embedding",
    "read_points",
    "sdm_map",
    "species_density",
    "species_map",
    "uncertainty_map",
    "write_map",
]
