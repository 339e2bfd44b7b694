"""File formats shared by the data modules and the metrics (a leaf: imports only ``errors``)."""
